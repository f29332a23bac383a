"""The `ami-engine` command line: a thin layer over the Python API (docs/README.md).

Exit codes: 0 success, 1 a check or the gate failed, 2 bad input or usage.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from . import ENGINE_MODEL, __version__
from .cli_options import Check, check_options, learn_scenario_size, parse_size
from .config import PROFILE_NAMES, Config, load_config, profile_text
from .errors import AmiEngineError, InputError, UsageError
from .io.tomlfile import plain_data


class _Commands(TyperGroup):
    """The commands: an option value the parser refuses (not a number, a missing option) is
    reported like every other usage error, on one line, with exit code 2."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            if not _is_parser_usage_error(exc):
                raise
            where = getattr(getattr(exc, "ctx", None), "command_path", None) or ctx.command_path
            print_error(UsageError.label, f"{exc.format_message()} (see {where} --help)")  # type: ignore[attr-defined]
            raise typer.Exit(UsageError.exit_code) from None


def _is_parser_usage_error(exc: BaseException) -> bool:
    """Click's UsageError (typer may carry its own copy of click), but not its request for help."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    return "UsageError" in names and "NoArgsIsHelpError" not in names and hasattr(exc, "format_message")


app = typer.Typer(
    cls=_Commands,
    name="ami-engine",
    help="AMI decision engine and its offline learning loop (Phase 6.0).",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _no_value_for_flags() -> None:
    """An on/off flag takes no value, so its help shows none (Typer would print `<bool>`)."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich

    def display_type_rich(self, ctx):
        return None if self.is_flag and self.metavar is None else shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich


_no_value_for_flags()
# Piped output is not cut to 80 columns: tables stay one row per line for grep and logs.
out_console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


WEIGHTS_HELP = ("Loss weights w1,w2,w3 (L = w1*fail_safe_rate + w2*mean_cus + w3*clamp_distortion); a fourth, "
                "w4, subtracts w4*(rate_L0 + 0.5*rate_L1), the original engine's later non-fail reward.")


DROP_UNKNOWN_HELP = ("Leave out state keys that are not part of a state (e.g. `severity`); each is recorded in "
                     "the traces' input_repairs as \"dropped\".")


def input_errors() -> tuple[type[BaseException], ...]:
    """The errors a command reports as bad input or usage (exit code 2)."""
    return (InputError, UsageError, OSError)


def report_error(exc: AmiEngineError | OSError) -> int:
    """Print what a command refused, on one line, and return its exit code: the one place
    where errors become exit codes (errors.py has the table). An operating-system error on
    a file is bad input, named like one."""
    if isinstance(exc, AmiEngineError):
        print_error(exc.label, exc)
        return exc.exit_code
    print_error(InputError.label, exc)
    return InputError.exit_code


def one_line(text: str) -> str:
    """`text` with its control characters (line breaks included) written as escapes."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def print_error(label: str, problem: BaseException | str) -> None:
    """`label message` on stderr, on one line, the message printed as written (never as markup)."""
    from .io.files import os_input_error

    message = str(os_input_error(problem)) if isinstance(problem, OSError) else str(problem)
    err_console.print(Text.assemble((label, "bold red"), " ", one_line(message)), soft_wrap=True)


def _command(fn: Callable[..., Any] | None = None, **checks: Check | None) -> Any:
    """Check the options (cli_options.OPTION_CHECKS, with `checks` changing some for this
    command), then run it; what it refuses is one line on stderr and its exit code
    (report_error)."""
    if fn is None:
        return functools.partial(_command, **checks)
    from .cli_options import OPTION_CHECKS

    own = {**OPTION_CHECKS, **checks}
    own = {name: check for name, check in own.items() if check is not None}

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            check_options(kwargs, own)
            return fn(*args, **kwargs)
        except (AmiEngineError, OSError) as exc:
            raise typer.Exit(report_error(exc)) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        print(f"ami-engine {__version__} (engine model {ENGINE_MODEL})")
        raise typer.Exit(0)


@app.callback(epilog="Documentation: docs/README.md (engine, learning, gate, formats, glossary).\n\n"
                     "Example:\nami-engine learn --scenario chaos --n 20000 --seed 1 --out out/suggestion.toml")
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the tool and engine-model versions.")] = False,
) -> None:
    """AMI decision engine and its offline learning loop."""


# ------------------------------------------------------------------------- helpers


def _config(profile: str | None, config: Path | None) -> Config:
    if profile is not None and config is not None:
        raise UsageError("--profile and --config are mutually exclusive")
    if config is not None:
        return load_config(str(config))
    return load_config(profile or "base")


def _states(states: Path | None, scenario: str | None, n: int | None, seed: int, streams: int,
            fill_missing: bool = False, clip: bool = False, drop_unknown: bool = False, int64: bool = False):
    from .io.states import read_states
    from .scenario import generate

    if (states is None) == (scenario is None):
        raise UsageError("give exactly one of --states FILE or --scenario NAME --n N")
    if states is not None:
        return read_states(str(states), fill_missing=fill_missing, clip=clip, drop_unknown=drop_unknown,
                           int64=int64)
    if drop_unknown:
        raise UsageError("--drop-unknown applies to --states FILE only")
    if n is None:
        raise UsageError("--scenario needs --n N")
    try:
        return generate(scenario, n, seed, streams)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


@contextmanager
def _progress(description: str, total: int) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on a terminal; silent when stderr is piped."""
    if not err_console.is_terminal:
        yield lambda done, total: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _write_bytes(path: str, chunks) -> None:
    from .io.files import atomic_output

    with atomic_output(path) as fh:
        for chunk in chunks:
            fh.write(chunk)


_learn_planned: list[int] = []  # the evaluations the running `learn` plans, once its schedule is made


def _interruptible(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Ctrl-C during `learn`: say how far the study got and the command that goes on, exit 130.

    Outputs are written atomically, so an interrupted run leaves none half-made; the
    study keeps every finished batch. An error raised while the interrupt unwinds (a study
    store's lock file cleaned up half-way, say) is part of the interrupt, not a failure of
    its own."""

    def interrupted(kwargs: dict[str, Any]) -> typer.Exit:
        from .learning.study import finished_evaluations
        from .workflow import study_path

        finished = 0
        with contextlib.suppress(Exception):  # no study yet, or none readable: nothing finished
            finished = finished_evaluations(study_path(kwargs.get("study"), kwargs["out"])) or 0
        of = f" of {_learn_planned[0]}" if _learn_planned else ""  # known once the schedule is
        err_console.print(f"interrupted after {finished}{of} evaluations; continue with: "
                          f"{_resume_command()}", highlight=False, markup=False, soft_wrap=True)
        return typer.Exit(130)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            raise interrupted(kwargs) from None
        except Exception as exc:
            if not _during_interrupt(exc):
                raise
            raise interrupted(kwargs) from None

    return wrapper


def _during_interrupt(exc: BaseException) -> bool:
    """True when `exc` was raised while a KeyboardInterrupt was being handled."""
    seen: set[int] = set()
    context = exc.__context__
    while context is not None and id(context) not in seen:
        if isinstance(context, KeyboardInterrupt):
            return True
        seen.add(id(context))
        context = context.__context__
    return False


@contextmanager
def _cluster(spec: str | None, *, engine: bool = True, lazy: bool = False) -> Iterator[Any]:
    """A Dask client for `--cluster SPEC` (None without one); a local cluster is closed after.
    `engine`: the workers run the engine. `lazy`: a function that gives the client, made
    when first called (cluster_client)."""
    if spec is None:
        yield None
        return
    from .cluster import ClusterError, cluster_client

    try:
        with cluster_client(spec, engine=engine, lazy=lazy) as client:
            yield client
    except ClusterError as exc:
        raise UsageError(f"--cluster {spec}: {exc}") from None


CLUSTER_HELP = ("Share the work out to a Dask cluster: local:N (N worker processes here) or tcp://HOST:PORT (a "
                "running scheduler whose workers see the same files). Needs pip install 'ami-engine[cluster]'.")


# ---------------------------------------------------------------------------- run


@app.command(epilog="See docs/engine.md (the rules), docs/formats.md (states and traces).\n\n"
                    "Example:\nami-engine run --scenario balanced --n 1000 --seed 1 --out traces.jsonl")
@_command
def run(
    out: Annotated[str, typer.Option("--out", help="Traces to write: JSONL (`-` = stdout, .gz compressed) "
                                                   "or Parquet (.parquet).")],
    states: Annotated[Path | None, typer.Option(help="States JSONL (`-` = stdin, .gz) or Parquet (file or "
                                                     "folder).")] = None,
    scenario: Annotated[str | None, typer.Option(help="safe, balanced, critical, chaos or curriculum.")] = None,
    n: Annotated[int | None, typer.Option("--n", help="Number of scenario states.")] = None,
    seed: Annotated[int, typer.Option(help="Scenario seed.")] = 0,
    streams: Annotated[int, typer.Option(help="Streams per scenario part.")] = 8,
    profile: Annotated[str | None, typer.Option(help=f"Profile name: {', '.join(PROFILE_NAMES)}, or one on the "
                                                     "profile search path (./profiles, AMI_ENGINE_PROFILES).")] = None,
    config: Annotated[Path | None, typer.Option(help="Config TOML file.")] = None,
    chaos: Annotated[bool, typer.Option("--chaos", help="Mark the traces as a chaos test.")] = False,
    fill_missing: Annotated[bool, typer.Option("--fill-missing", help="Fill missing state fields with 0.5.")] = False,
    clip: Annotated[bool, typer.Option("--clip", help="Clip out-of-range state values into [0, 1].")] = False,
    drop_unknown: Annotated[bool, typer.Option("--drop-unknown", help=DROP_UNKNOWN_HELP)] = False,
    cluster: Annotated[str | None, typer.Option(help=CLUSTER_HELP + " The states' pre-decisions are made on the "
                                                "workers, a slice at a time; --out must be .parquet (the same "
                                                "file as without).")] = None,
) -> None:
    """Decide states under one config and write one DecisionTrace per decision."""
    from .engine.write import write_run
    from .io.parquet import PARQUET_SUFFIX

    if cluster is not None and not out.lower().endswith(PARQUET_SUFFIX):
        raise UsageError(f"--cluster: the workers write Parquet; give --out a .parquet file (got {out})")
    from .workflow import refuse_overwriting_inputs

    refuse_overwriting_inputs({"--out": out}, {"--states": states, "--config": config})
    cfg = _config(profile, config)
    # Parquet traces hold 64-bit integers: a larger stream, t or id is refused at its line.
    stateset = _states(states, scenario, n, seed, streams, fill_missing, clip, drop_unknown,
                       int64=out.lower().endswith(PARQUET_SUFFIX))
    if cluster is not None:
        from .cluster import run_on_cluster

        with _cluster(cluster) as client:
            counts = run_on_cluster(client, stateset, cfg, out, chaos=chaos)
    else:
        counts = write_run(out, stateset, cfg, chaos=chaos)
    if out != "-":
        err_console.print(f"{len(stateset)} decisions -> {escape(out)}  "
                          f"(L0 {counts[0]}, L1 {counts[1]}, L2 {counts[2]})", highlight=False)


# ------------------------------------------------------------------------- metrics


@app.command(epilog="See docs/learning.md §3 (metrics and loss).\n\n"
                    "Example:\nami-engine metrics traces.jsonl --weights 1.5,1.0,0.5 --json")
@_command
def metrics(
    traces: Annotated[list[str], typer.Argument(help="Traces JSONL (`-` = stdin, .gz) or Parquet (file or "
                                                     "folder); several are taken together.")],
    weights: Annotated[str, typer.Option(help=WEIGHTS_HELP)] = "1.5,1.0,0.5",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    cluster: Annotated[str | None, typer.Option(help=CLUSTER_HELP + " Each file is read in ranges on the "
                                                "workers; the figures are the same bits.")] = None,
) -> None:
    """Feedback metrics and loss of existing traces files (any engine of the same format).

    Records whose confidence is null (the original engine writes them) are counted and
    shown; no figure reads confidence."""
    from .io import keep_freed_memory
    from .learning.feedback_metrics import MetricSums, metrics_from_traces
    from .learning.loss import LossWeights, loss

    try:
        w = LossWeights.parse(weights)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if traces.count("-") > 1:
        raise UsageError("TRACES: stdin (-) can be read once")
    if cluster is not None:
        from .cluster import metrics_on_cluster

        with _cluster(cluster, engine=False) as client:
            parts = metrics_on_cluster(client, traces)
    else:
        keep_freed_memory()  # batch after batch of the same sizes
        parts = [metrics_from_traces(t) for t in traces]
    sums = MetricSums()
    for part in parts:
        sums = sums + part
    result = {
        "records": sums.n,
        "L": loss(sums.fail_safe_rate, sums.mean_cus, sums.clamp_distortion, w,
                  level0_rate=sums.level_rates[0], level1_rate=sums.level_rates[1]),
        "fail_safe_rate": sums.fail_safe_rate,
        "mean_cus": sums.mean_cus,
        "clamp_distortion": sums.clamp_distortion,
        "level_rates": list(sums.level_rates),
        "level_counts": list(sums.n_level),
        "human_escalation_rate": sums.human_escalation_rate,
        "null_confidence": sums.n_null_confidence,
        "weights": w.as_list(),
    }
    if as_json:
        print(json.dumps(plain_data(result)))
        return
    table = Table(title=f"Feedback metrics: {escape(', '.join(traces))}", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("records", str(result["records"]))
    for key in ("fail_safe_rate", "mean_cus", "clamp_distortion", "human_escalation_rate"):
        table.add_row(key, f"{result[key]:.6f}")
    table.add_row("levels L0 / L1 / L2", " / ".join(str(c) for c in result["level_counts"]))
    table.add_row("records with null confidence", str(result["null_confidence"]))
    table.add_row(f"L (weights {','.join(f'{x:g}' for x in result['weights'])})", f"{result['L']:.6f}")
    out_console.print(table)


# ------------------------------------------------------------------------- convert


@app.command(epilog="See docs/formats.md.\n\n"
                    "Example:\nami-engine convert traces.jsonl.gz traces.parquet")
@_command
def convert(
    source: Annotated[str, typer.Argument(help="States or traces to read: JSONL (`-` = stdin, .gz) or Parquet "
                                               "(a .parquet file or a folder of them).")],
    target: Annotated[str, typer.Argument(help="File to write: Parquet when it ends in .parquet, else JSONL "
                                               "(`-` = stdout, .gz compressed).")],
) -> None:
    """Convert states or traces between JSONL and Parquet, checked as strictly as any reader."""
    from .io.convert import convert as convert_file

    done = convert_file(source, target)
    if target != "-":
        err_console.print(f"{done.records} {done.kind} records -> {target}", highlight=False)


# --------------------------------------------------------------------------- check


@app.command(epilog="See docs/engine.md §13 (the invariants).\n\n"
                    "Example:\nami-engine check traces.jsonl --profile base")
@_command
def check(
    traces: Annotated[str, typer.Argument(help="Traces JSONL to check.")],
    profile: Annotated[str | None, typer.Option(help="Profile that produced the traces (besides the built-ins and "
                                                     "the profile search path).")] = None,
    config: Annotated[Path | None, typer.Option(help="Config TOML that produced the traces (besides the built-ins "
                                                     "and the profile search path).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Invariants of docs/engine.md §13 over a traces file; exit 1 when any is broken.

    Each record is judged against the config that produced it: its `config_id` is looked
    up among the built-in profiles, the profiles on the search path and the --config or
    --profile given. A record whose config cannot be found is an error (exit 2). Records
    whose confidence is null are listed as findings, for information: they break no
    invariant and do not change the exit code, but the invariants that read confidence
    cannot be judged on them."""
    from .check import check_traces

    given = None if profile is None and config is None else _config(profile, config)
    checked = check_traces(traces, _config_resolver(traces, given))
    violations, findings, used = checked.violations, checked.findings, checked.configs
    sources = ", ".join(f"{cfg.source} ({cfg.config_id})" for cfg in used.values())
    if as_json:
        print(json.dumps({"traces": traces, "configs": {cfg.config_id: cfg.source for cfg in used.values()},
                          "violations": [plain_data(v.to_dict()) for v in violations],
                          "findings": [f.to_dict() for f in findings]}))
    else:
        for v in violations:
            print(v.format(traces))
        for f in findings:
            print(f.format(traces))
        status = "OK" if not violations else f"{len(violations)} violation(s)"
        if findings:
            status += (f"; {len(findings)} record(s) with null confidence "
                       "(findings, not violations: they do not fail the check)")
        err_console.print(f"check {traces} against {sources}: {status}", highlight=False, markup=False)
    if violations:
        raise typer.Exit(1)


def _config_resolver(traces: str, given: Config | None) -> Callable[[str | None, int], Config]:
    """config_id -> the config that produced it: the --config/--profile given, the
    built-in profiles, then the profiles on the search path."""
    from .config import list_profiles
    from .io.files import InputError, display_name

    known: dict[str, Config] = {}
    if given is not None:
        known[given.config_id] = given

    def resolve(config_id: str | None, line: int) -> Config:
        if config_id is None:
            if given is None:
                raise InputError(display_name(traces), line, "config_id", "missing: the record does not say which "
                                 "config produced it; pass that config with --config or --profile")
            return given
        if config_id not in known:
            for name, _, _ in list_profiles():
                cfg = load_config(name)
                known.setdefault(cfg.config_id, cfg)
                if config_id in known:
                    break
        if config_id not in known:
            raise InputError(display_name(traces), line, "config_id", f"{config_id} is not the config_id of a "
                             "built-in profile, of a profile on the search path or of the --config given; pass the "
                             "config that produced these traces with --config")
        return known[config_id]

    return resolve


# ------------------------------------------------------------------------- explain


@app.command(epilog="See docs/engine.md (scores, selection, CUS, reasons).\n\n"
                    "Example:\nami-engine explain --states states.jsonl --line 12 --profile base")
@_command
def explain(
    state: Annotated[str | None, typer.Option(help="One state as a JSON object.")] = None,
    states: Annotated[Path | None, typer.Option(help="States JSONL or traces JSONL (each record's `state`); pick "
                                                     "the decision with --line or --id.")] = None,
    line: Annotated[int | None, typer.Option(help="1-based line of --states (its stream's history is replayed).")]
    = None,
    record_id: Annotated[str | None, typer.Option("--id", help="The `id` of the record of --states to explain.")]
    = None,
    profile: Annotated[str | None, typer.Option(help="Built-in profile.")] = None,
    config: Annotated[Path | None, typer.Option(help="Config TOML file.")] = None,
    top: Annotated[int, typer.Option(help="Candidates to list.")] = 15,
    drop_unknown: Annotated[bool, typer.Option("--drop-unknown", help=DROP_UNKNOWN_HELP)] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """One decision laid open: candidates' W, J, H, C, S, margins, distinct scores, DE/AS/CUS, the rule."""
    from .engine import run as engine_run
    from .engine import trace_records
    from .explain import explain_decision, pick_decision
    from .io.states import states_from_records

    cfg = _config(profile, config)
    if (state is None) == (states is None):
        raise UsageError("give exactly one of --state JSON or --states FILE with --line N or --id ID")
    picked = None
    if state is not None:
        if line is not None or record_id is not None:
            raise UsageError("--line and --id pick a record of --states FILE, not of --state")
        try:
            record = json.loads(state)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--state: not valid JSON: {exc}") from None
        except RecursionError:
            raise UsageError("--state: not valid JSON: nested too deeply") from None
        if not isinstance(record, dict):
            raise UsageError("--state: expected a JSON object")
        stateset = states_from_records([record], drop_unknown=drop_unknown)
        index = 0
    else:
        if (line is None) == (record_id is None):
            raise UsageError("--states needs exactly one of --line N or --id ID")
        from .io.files import read_once
        from .io.parquet import is_parquet

        # read once: stdin (`-`) cannot be read twice, and a file is judged on one set of bytes
        source = str(states) if is_parquet(states) else read_once(str(states))
        picked = pick_decision(source, line=line, record_id=record_id, drop_unknown=drop_unknown)
        stateset, index = picked.states, picked.index
    cols = engine_run(stateset, cfg)
    trace = trace_records(cols, stateset, cfg)[index]
    result = explain_decision(stateset.values[index], cfg, trace)
    if picked is not None:
        result["picked"] = picked.to_dict()
    if as_json:
        print(json.dumps(plain_data(result)))
        return
    _print_explanation(result, cfg, top)


def _print_explanation(r: dict[str, Any], cfg: Config, top: int) -> None:
    tr = r["trace"]
    picked = r.get("picked")
    if picked is not None:
        what = "the record's `state`" if picked["kind"] == "traces" else "the state"
        out_console.print(f"[bold]Decision[/] {escape(str(picked['file']))}:{picked['line']} ({what}; the earlier "
                          "states of the file replayed for its stream's history)", highlight=False)
        if "note" in picked:
            out_console.print(f"note: {picked['note']}", highlight=False, markup=False)
    out_console.print(f"[bold]State[/] {escape(json.dumps(r['state']))}", highlight=False)
    if tr.get("input_repairs"):
        out_console.print("input repairs: " + ", ".join(f"{k} {v}" for k, v in tr["input_repairs"].items()),
                          highlight=False, markup=False)
    out_console.print(f"config {escape(cfg.source)} ({r['config_id']}); {r['n_actions']} actions, "
                      f"{r['n_candidates']} candidates (J >= {cfg['J_MIN']}, H <= {cfg['H_MAX']}, "
                      f"{cfg['C_MIN']} <= C <= {cfg['C_MAX']})", highlight=False)
    if r["rejected_by"]:
        out_console.print("rejected by: " + ", ".join(f"{k}: {v}" for k, v in r["rejected_by"].items()),
                          highlight=False)
    if r["n_candidates"]:
        table = Table(title=f"Candidates by S, ranked (top {min(top, r['n_candidates'])} of {r['n_candidates']})")
        for col in ("rank", "grid #", "action", "W", "J", "H", "C", "S", "margin", "confidence"):
            table.add_column(col, justify="right")
        for c in r["candidates"][:top]:
            action = " ".join(f"{x:g}" for x in c["action"])
            table.add_row(str(c["rank"]), str(c["index"]), action,
                          *(f"{c[k]:.4f}" for k in ("W", "J", "H", "C", "S", "margin", "confidence")))
        out_console.print(table)
    else:
        out_console.print(f"[bold]{r['no_candidate']}[/]", highlight=False)
    if r["distinct_scores"]:
        shown = ", ".join(f"{d:.6f}" for d in r["distinct_scores"][:8])
        more = "" if len(r["distinct_scores"]) <= 8 else f", ... ({len(r['distinct_scores'])} in all)"
        out_console.print(f"distinct scores: {shown}{more}", highlight=False)
        as_text = "n/a" if r.get("AS") is None else f"{r['AS']:.6f}"
        out_console.print(f"DE_norm {r['DE_norm']:.6f}   AS {as_text}   AS_norm {r['AS_norm']:.6f}",
                          highlight=False)
        sel = r["selected"]
        out_console.print(f"selected action #{sel['index']} {sel['action']}: margin {sel['margin']:.4f}, "
                          f"confidence {sel['confidence']:.4f}", highlight=False)
    dc = "null" if tr["delta_cus"] is None else f"{tr['delta_cus']:.4f}"
    out_console.print(f"CUS (pre-clamp) {tr['cus_raw']:.4f}   delta_cus {dc}   cus_mean {tr['cus_mean']:.4f}",
                      highlight=False)
    out_console.print(f"[bold]rule[/] {r['rule']}", highlight=False)
    out_console.print(f"final action {tr['final_action']}  (raw {tr['raw_action']}), confidence "
                      f"{tr['confidence']:.4f}, CUS {tr['cus']:.4f}, soft_clamp {tr['soft_clamp']}", highlight=False)
    recorded = (picked or {}).get("recorded")
    if recorded is not None:
        said = f"level {recorded['level']}" + (f", reason {recorded['reason']}" if "reason" in recorded else "")
        same = recorded["level"] == tr["level"] and recorded.get("reason", tr["reason"]) == tr["reason"]
        config_note = ""
        if recorded.get("config_id") not in (None, cfg.config_id):
            config_note = f"; the record was decided under config_id {recorded['config_id']}, not {cfg.config_id}"
        verdict = "the same decision" if same else f"this config decides level {tr['level']}, reason {tr['reason']}"
        out_console.print(f"the file records {said}: {verdict}{config_note}", highlight=False)


# -------------------------------------------------------------------------- learn


@app.command(epilog="See docs/learning.md.\n\n"
                    "Example:\nami-engine learn --scenario chaos --n 20000 --seed 1 --out out/suggestion.toml")
@_command(n=learn_scenario_size)
@_interruptible
def learn(
    out: Annotated[str, typer.Option("--out", help="Suggestion TOML to write (never a profile); on REJECT a "
                                                   "suggestion an earlier run left there is removed.")],
    states: Annotated[Path | None, typer.Option(help="States to learn from (JSONL or Parquet; `-` = stdin, "
                                                     ".gz).")] = None,
    traces: Annotated[Path | None, typer.Option(help="Traces whose records carry `state` (replayed; JSONL or "
                                                     "Parquet; `-` = stdin, .gz).")] = None,
    scenario: Annotated[str | None, typer.Option(help="Scenario to generate: safe, balanced, critical, chaos, "
                                                      "curriculum.")] = None,
    n: Annotated[int | None, typer.Option("--n", help="Number of scenario states.")] = None,
    seed: Annotated[int, typer.Option(help="Seeds everything: scenario, split, search.")] = 0,
    streams: Annotated[int, typer.Option(help="Streams per scenario part.")] = 8,
    profile: Annotated[str | None, typer.Option(help="Baseline profile.")] = None,
    config: Annotated[Path | None, typer.Option(help="Baseline config TOML.")] = None,
    strategy: Annotated[str, typer.Option(help="grid, random, sobol, tpe or cmaes.")] = "tpe",
    budget: Annotated[int, typer.Option(help="Candidates the search tries on its smallest sample, plus the "
                                             "refinement's evaluations; with more data, racing adds a few "
                                             "evaluations of the best on larger samples.")] = 300,
    batch_size: Annotated[int, typer.Option(help="Candidates per step (one history line each).")] = 32,
    weights: Annotated[str, typer.Option(help=WEIGHTS_HELP)] = "1.5,1.0,0.5",
    train_fraction: Annotated[float, typer.Option(help="Share of records used for training.")] = 0.8,
    regression: Annotated[Path | None, typer.Option(help="Regression suite JSONL (expect_level_min).")] = None,
    critical_factor: Annotated[float, typer.Option(help="Critical floor factor (0 turns it off).")] = 0.25,
    critical_margin: Annotated[float, typer.Option(help="Critical mean-H margin.")] = 0.02,
    perturb: Annotated[bool, typer.Option("--perturb", help="random: perturb around the current config.")]
    = False,
    step_scale: Annotated[float, typer.Option(help="random --perturb: step as a share of each bound's width.")]
    = 0.1,
    points_per_axis: Annotated[int | None, typer.Option(help="grid: points per parameter axis.")] = None,
    history: Annotated[str | None, typer.Option(help="History JSONL to write (one line per step).")] = None,
    report: Annotated[str | None, typer.Option(help="HTML report to write.")] = None,
    study: Annotated[str | None, typer.Option(help="Where finished evaluations are kept: a journal file, or a "
                                                   "postgresql:// URL to share one study among hosts; default "
                                                   "OUT.study.journal.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the study's finished evaluations.")] = False,
    fresh: Annotated[bool, typer.Option("--fresh", help="Delete the existing study and start over.")] = False,
    drop_unknown: Annotated[bool, typer.Option("--drop-unknown", help="--states: leave out keys that are not part "
                                               "of a state (recorded in the suggestion's data).")] = False,
    memory: Annotated[str, typer.Option(help="Memory learning may hold, e.g. 4G or 512M; more is faster, the "
                                             "result is the same.")] = "4G",
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    cluster: Annotated[str | None, typer.Option(help=CLUSTER_HELP + " The training shards are kept on the "
                                                "workers; the suggestion is the same bytes.")] = None,
) -> None:
    """Learn a suggested config from states, a scenario or replayable traces. Nothing is applied."""
    from .workflow import plan_learn, run_learn_job

    def text(path: Path | None) -> str | None:
        return None if path is None else str(path)

    job = plan_learn(out=out, states=text(states), traces=text(traces), scenario=scenario, n=n, seed=seed,
                     streams=streams, strategy=strategy, budget=budget, batch_size=batch_size,
                     train_fraction=train_fraction, regression=text(regression), perturb=perturb,
                     step_scale=step_scale, points_per_axis=points_per_axis, history=history, report=report,
                     study=study, resume=resume, fresh=fresh, drop_unknown=drop_unknown, memory=parse_size(memory))
    baseline = _config(profile, config)
    with _progress("learning", budget) as bar, _cluster(cluster, lazy=True) as connection:
        def progress(done: int, total: int) -> None:
            _learn_planned[:] = [total]
            bar(done, total)

        evaluator = None
        if connection is not None:
            from .cluster import DaskShardEvaluator

            # A local cluster's workers read spilled shards from this machine's files themselves.
            local = cluster.strip().startswith("local:")

            def evaluator(shards, base, *, keep_first=None):
                return DaskShardEvaluator(connection(), shards, base, keep_first=keep_first, files_shared=local)

        outcome = run_learn_job(job, baseline, weights=weights, critical_factor=critical_factor,
                                critical_margin=critical_margin, progress=progress, evaluator=evaluator)
    result, earlier = outcome.result, outcome.removed_earlier
    if as_json:
        print(json.dumps(plain_data({"accepted": result.accepted, "status": result.status,
                                    "suggestion": out if result.accepted else None, **result.suggestion_toml})))
    else:
        _print_learn_summary(result, out)
    if earlier:
        err_console.print(f"removed {escape(out)}, the suggestion of an earlier run: it does not belong with this "
                          "run's outputs", highlight=False)
    # No improvement is a finished run with nothing to suggest (exit 0, no file); a rejection is exit 1.
    if result.status == "rejected":
        raise typer.Exit(1)


def _resume_command() -> str:
    """The command line of this run, asking to resume it."""
    import shlex

    args = [a for a in sys.argv[1:] if a != "--fresh"]
    if "--resume" not in args:
        args.append("--resume")
    return shlex.join(["ami-engine", *args])


_METRIC_NAMES = {"L": "L", "fail_safe_rate": "fail-safe rate", "mean_cus": "mean CUS",
                 "clamp_distortion": "clamp distortion", "mean_H": "mean H"}


def _say_racing(say: Callable[..., None], meta: dict[str, Any]) -> None:
    """The racing schedule of a learning run, a few lines."""
    if isinstance(meta.get("racing"), dict):
        from .learning.racing import describe

        for line in describe(meta["racing"]):
            say(escape(line))


def _print_learn_summary(result, out: str) -> None:
    """One screen, 80 columns: the promise (or why there is none), the figures, what got
    worse, the learned parameters, the needless fail-safes and where the file went."""
    from .learning.offline_loop import NO_IMPROVEMENT, NOT_GATED, REJECTED

    meta = result.suggestion_toml["meta"]
    say = functools.partial(out_console.print, highlight=False)
    certificate = meta.get("certificate", {})
    if result.status == NO_IMPROVEMENT:
        held = meta["metrics"]["heldout"]["baseline"]
        tried = meta.get("racing", {}).get("rungs", [{}])[0].get("candidates", meta["budget"])
        say(f"[bold]no improvement found[/]: none of the {tried} candidates beats the baseline "
            f"{escape(str(meta['baseline']))} on the training data (its L there "
            f"{meta['metrics']['train']['baseline']['L']:.4f}, "
            f"held-out {held['L']:.4f}); no suggestion written.")
        if meta.get("strategy_note"):
            say(f"note: {meta['strategy_note']}")
        _say_racing(say, meta)
        return
    elif result.status == NOT_GATED:
        say("[bold]not gated[/]: the best candidate below has not been through the safety gate.")
    elif "promise" in certificate:
        say(f"[bold]{certificate['promise'][0].upper()}{certificate['promise'][1:]}.[/]")
    if meta.get("strategy_note"):
        say(f"note: {meta['strategy_note']}")
    m = meta["metrics"]
    table = Table(title=f"Baseline {escape(str(meta['baseline']))} vs suggestion ({meta['strategy']}, budget "
                        f"{meta['budget']}, seed {meta['seed']})")
    for col in ("data", "metric", "baseline", "suggestion", "change"):
        table.add_column(col, justify="left" if col in ("data", "metric") else "right")
    for part, label in (("train", "train"), ("heldout", "held-out")):
        for key in ("L", "fail_safe_rate", "mean_cus", "clamp_distortion"):
            b, s = m[part]["baseline"][key], m[part]["suggestion"][key]
            change = f"{(s - b) / b * 100:+.1f}%" if b else "n/a"
            table.add_row(label if key == "L" else "", _METRIC_NAMES[key], f"{b:.4f}", f"{s:.4f}", change,
                          end_section=key == "clamp_distortion")
    out_console.print(table)
    for w in meta.get("worse", []):
        say(f"[bold yellow]worse:[/] {_METRIC_NAMES.get(w['figure'], w['figure'])} on {w['data']} "
            f"{w['baseline']:.4g} -> {w['suggestion']:.4g}")
    params = Table(title="Learned parameters")
    for col in ("parameter", "baseline", "suggestion", "bounds", "note"):
        params.add_column(col)
    for name, (lo, hi) in meta["bounds"].items():
        flag = "on bound" if name in meta["params_on_bound"] else ""
        params.add_row(name, f"{meta['baseline_params'][name]:.4g}", f"{result.suggestion_toml[name]:.4g}",
                       f"[{lo}, {hi}]", flag)
    out_console.print(params)
    _say_racing(say, meta)
    nd = result.needless
    say(f"[bold]Needless fail-safes[/]: {nd['count']} of {nd['baseline_l2']} baseline fail-safes "
        f"({nd['n']} decisions) are not fail-safes under the suggestion.")
    if nd["count"]:
        say(f"  {nd['definition']} {nd['meet_invariants']} of the {nd['count']} do.")
        for label, key in (("J - J_MIN", "J_minus_J_MIN"), ("H_MAX - H", "H_MAX_minus_H")):
            q = nd["margins"][key]
            say(f"  {label} of their final actions: min {q['min']:.3f}, 10th percentile {q['p10']:.3f}, "
                f"median {q['median']:.3f}")
    if nd["by_reason"]:
        say("  by baseline reason: " + ", ".join(f"{k} {v}" for k, v in nd["by_reason"].items()))
    for sentence in nd["summary"]:
        say(f"  where {sentence}")
    if result.gate is not None:
        colour = "green" if result.accepted else "red"
        say(f"gate: [bold {colour}]{result.gate.verdict}[/]")
    if result.accepted:
        say(f"suggestion written to {escape(out)} (not applied; review it, then `ami-engine apply`)")
    elif result.status == REJECTED:
        failed = ", ".join(result.gate.failed) if result.gate is not None else ""
        say(f"[bold red]no candidate passed the gate[/] (failed: {failed}): no suggestion written")
        if result.gate is not None and "certificate" in result.gate.failed:
            say(f"certificate: {result.gate.check('certificate').detail.split('. ')[0]}")
    elif result.status == NOT_GATED:
        say("no suggestion written: a suggestion is written only once the gate accepts it")


# ----------------------------------------------------------------------- gate / apply


@app.command(epilog="See docs/gate.md (every check and threshold).\n\n"
                    "Example:\nami-engine gate out/suggestion.toml --regression cases.jsonl")
@_command
def gate(
    suggestion: Annotated[str, typer.Argument(help="Suggestion (or any config) TOML.")],
    baseline: Annotated[str | None, typer.Option(help="Baseline profile name or file (default: its `extends`).")]
    = None,
    regression: Annotated[Path | None, typer.Option(help="Regression suite JSONL (expect_level_min).")] = None,
    critical_factor: Annotated[float, typer.Option(help="Critical floor factor (0 turns it off).")] = 0.25,
    critical_margin: Annotated[float, typer.Option(help="Critical mean-H margin.")] = 0.02,
    data: Annotated[str | None, typer.Option(help="A moved copy of the suggestion's data file (accepted only "
                                                  "with the SHA-256 the suggestion names).")] = None,
    delta: Annotated[float, typer.Option(help="The certificate's bounds hold at confidence 1 - delta.")] = 0.05,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Safety gate: ACCEPT (exit 0) or REJECT (exit 1), with every check's figure and threshold.

    A baseline that weakens a hard floor (or any other parameter learning never touches)
    against the built-in profile or audited applied profile it is judged against is
    refused by name (exit 2)."""
    from .gate import CriticalFloor, GateThresholds, gate_suggestion_file

    try:
        thresholds = GateThresholds(CriticalFloor(critical_factor, critical_margin), delta=delta)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    report = gate_suggestion_file(suggestion, baseline=baseline, regression=str(regression) if regression else None,
                                  thresholds=thresholds, data=data)
    if as_json:
        print(report.to_json())
    else:
        report.print(out_console)
    if not report.accepted:
        raise typer.Exit(1)


@app.command(epilog='See docs/gate.md (apply and the audit log).\n\n'
                     'Example:\nami-engine apply suggestion.toml --approved-by "A. Reviewer" --out tuned.toml')
@_command
def apply(
    suggestion: Annotated[str, typer.Argument(help="Suggestion TOML to turn into a profile.")],
    approved_by: Annotated[str, typer.Option("--approved-by", help="Name of the person approving it.")],
    out: Annotated[str, typer.Option("--out", help="Profile TOML to write.")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing profile file.")] = False,
    audit_log: Annotated[str | None, typer.Option(help="Audit log JSONL (default next to --out).")] = None,
    baseline: Annotated[str | None, typer.Option(help="Baseline for the gate (default: its `extends`).")] = None,
    regression: Annotated[Path | None, typer.Option(help="Regression suite for the gate.")] = None,
    data: Annotated[str | None, typer.Option(help="A moved copy of the suggestion's data file (accepted only "
                                                  "with the SHA-256 the suggestion names).")] = None,
) -> None:
    """Write an approved suggestion to a new, self-contained profile: only after the gate ACCEPTs it again.

    The suggestion is read once; the audit line is appended before the profile appears;
    the output is locked against a concurrent apply. Exit 1 when the gate REJECTs it, 2
    for a usage error (an existing --out without --force, an empty --approved-by)."""

    from .gate.approval import apply_suggestion

    result = apply_suggestion(suggestion, approved_by=approved_by, out=out, force=force, audit_log=audit_log,
                              baseline=baseline, regression=str(regression) if regression else None, data=data)
    out_console.print(f"profile written to {one_line(result.profile_path)}; audit line appended to "
                      f"{one_line(result.audit_log)}", highlight=False, markup=False)


# ------------------------------------------------------------------------- report


@app.command(epilog="See docs/learning.md (what the report shows), docs/glossary.md.\n\n"
                    "Example:\nami-engine report --suggestion suggestion.toml --out report.html")
@_command(history=None)  # here the history is read, not written
def report(
    suggestion: Annotated[str, typer.Option(help="Suggestion TOML.")],
    out: Annotated[str, typer.Option("--out", help="HTML file to write.")],
    history: Annotated[str | None, typer.Option(help="History JSONL from learn.")] = None,
    traces: Annotated[str | None, typer.Option(help="Traces JSONL for the trace panels.")] = None,
    data: Annotated[str | None, typer.Option(help="A moved copy of the suggestion's data file, checked against "
                                                  "the SHA-256 it names.")] = None,
) -> None:
    """One self-contained HTML page: learning curves, baseline vs suggestion, traces, gate, needless fail-safes."""
    from .io.history import read_history
    from .io.traces import read_trace_records
    from .report import TRACE_KEYS, render_report
    from .suggestion import read_suggestion_document
    from .workflow import refuse_overwriting_inputs

    refuse_overwriting_inputs({"--out": out}, {"--suggestion": suggestion, "--history": history, "--traces": traces,
                                               "--data": data})
    doc = read_suggestion_document(suggestion, data=data)
    hist = read_history(history) if history else None
    recs = read_trace_records(traces, keys=TRACE_KEYS) if traces else None
    _write_bytes(out, [render_report(doc, hist, recs).encode()])


# ------------------------------------------------------------------------ profiles


@app.command(epilog="See docs/engine.md §14 (parameters and profiles).\n\n"
                    "Example:\nami-engine profiles production_safe")
@_command
def profiles(name: Annotated[str | None, typer.Argument(help="Show this profile's TOML and effective values.")]
             = None) -> None:
    """List the profiles found by name (./profiles, then AMI_ENGINE_PROFILES, then the built-ins), or show one."""
    from rich.text import Text

    from .config import list_profiles

    if name is None:
        table = Table(title="Profiles (search path: ./profiles, then AMI_ENGINE_PROFILES, then the built-ins)")
        for col in ("profile", "from", "J_MIN", "H_MAX", "C_MIN", "C_MAX", "J_CRITICAL", "H_CRITICAL", "CONF_FORCE",
                    "config_id"):
            table.add_column(col)
        for p, origin, path in list_profiles():
            c = load_config(p)
            where = origin if path is None else f"{path} ({origin})"
            table.add_row(Text(p), Text(where),
                          *(f"{c[k]:g}" for k in ("J_MIN", "H_MAX", "C_MIN", "C_MAX", "J_CRITICAL", "H_CRITICAL",
                                                  "CONFIDENCE_ESCALATION_FORCE")), c.config_id)
        out_console.print(table)
        return
    cfg = load_config(name)
    print(profile_text(name).rstrip())
    print(f"\n# {cfg.source}: effective values (config_id {cfg.config_id})")
    for key, value in cfg.to_dict().items():
        print(f"# {key} = {json.dumps(value)}")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
