"""The `ami-engine` command line: a thin layer over the Python API (docs/README.md).

Exit codes: 0 success, 1 a check or the gate failed, 2 bad input or usage.
"""

from __future__ import annotations

import functools
import json
import sys
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from . import ENGINE_MODEL, __version__
from .config import PROFILE_NAMES, Config, ConfigError, load_config, profile_text
from .io.tomlfile import dumps_toml, plain_data, toml_ready

app = typer.Typer(
    name="ami-engine",
    help="AMI decision engine and its offline learning loop (Phase 6.0).",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# Piped output is not cut to 80 columns: tables stay one row per line for grep and logs.
out_console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


class UsageError(ValueError):
    """Bad combination of options (exit code 2)."""


def _input_errors() -> tuple[type[BaseException], ...]:
    from .io.files import InputError
    from .learning.offline_loop import LearnError
    from .learning.study import StudyMismatchError

    return (InputError, ConfigError, LearnError, StudyMismatchError, UsageError, OSError, tomllib.TOMLDecodeError)


def _command(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn input errors into one clear line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _input_errors() as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

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
            fill_missing: bool = False, clip: bool = False):
    from .io.states import read_states
    from .scenario import generate

    if (states is None) == (scenario is None):
        raise UsageError("give exactly one of --states FILE or --scenario NAME --n N")
    if states is not None:
        return read_states(str(states), fill_missing=fill_missing, clip=clip)
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

    if path != "-":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as fh:
        for chunk in chunks:
            fh.write(chunk)


# ---------------------------------------------------------------------------- run


@app.command(epilog="See docs/engine.md (the rules), docs/formats.md (states and traces).\n\n"
                    "Example:\nami-engine run --scenario balanced --n 1000 --seed 1 --out traces.jsonl")
@_command
def run(
    out: Annotated[str, typer.Option("--out", help="Traces JSONL to write (`-` = stdout, .gz compressed).")],
    states: Annotated[Path | None, typer.Option(help="States JSONL (`-` = stdin, .gz).")] = None,
    scenario: Annotated[str | None, typer.Option(help="safe, balanced, critical, chaos or curriculum.")] = None,
    n: Annotated[int | None, typer.Option("--n", help="Number of scenario states.")] = None,
    seed: Annotated[int, typer.Option(help="Scenario seed.")] = 0,
    streams: Annotated[int, typer.Option(help="Streams per scenario part.")] = 8,
    profile: Annotated[str | None, typer.Option(help=f"Built-in profile: {', '.join(PROFILE_NAMES)}.")] = None,
    config: Annotated[Path | None, typer.Option(help="Config TOML file.")] = None,
    chaos: Annotated[bool, typer.Option("--chaos", help="Mark the traces as a chaos test.")] = False,
    fill_missing: Annotated[bool, typer.Option("--fill-missing", help="Fill missing state fields with 0.5.")] = False,
    clip: Annotated[bool, typer.Option("--clip", help="Clip out-of-range state values into [0, 1].")] = False,
) -> None:
    """Decide states under one config and write one DecisionTrace per decision."""
    from .engine import run as engine_run
    from .io.traces import encode_traces

    cfg = _config(profile, config)
    stateset = _states(states, scenario, n, seed, streams, fill_missing, clip)
    cols = engine_run(stateset, cfg)
    _write_bytes(out, encode_traces(cols, stateset, config_id=cfg.config_id, model=ENGINE_MODEL, chaos=chaos))
    if out != "-":
        counts = np.bincount(cols.level, minlength=3)
        err_console.print(f"{len(stateset)} decisions -> {out}  (L0 {counts[0]}, L1 {counts[1]}, L2 {counts[2]})",
                          highlight=False)


# ------------------------------------------------------------------------- metrics


@app.command(epilog="See docs/learning.md §3 (metrics and loss).\n\n"
                    "Example:\nami-engine metrics traces.jsonl --weights 1.5,1.0,0.5 --json")
@_command
def metrics(
    traces: Annotated[str, typer.Argument(help="Traces JSONL (`-` = stdin, .gz).")],
    weights: Annotated[str, typer.Option(help="Loss weights w1,w2,w3.")] = "1.5,1.0,0.5",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Feedback metrics and loss of an existing traces file (any engine of the same format)."""
    from .learning.feedback_metrics import metrics_from_traces
    from .learning.loss import LossWeights, loss

    try:
        w = LossWeights.parse(weights)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    sums = metrics_from_traces(traces)
    result = {
        "records": sums.n,
        "L": loss(sums.fail_safe_rate, sums.mean_cus, sums.clamp_distortion, w),
        "fail_safe_rate": sums.fail_safe_rate,
        "mean_cus": sums.mean_cus,
        "clamp_distortion": sums.clamp_distortion,
        "level_rates": list(sums.level_rates),
        "level_counts": list(sums.n_level),
        "human_escalation_rate": sums.human_escalation_rate,
        "weights": w.as_list(),
    }
    if as_json:
        print(json.dumps(plain_data(result)))
        return
    table = Table(title=f"Feedback metrics: {traces}", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("records", str(result["records"]))
    for key in ("fail_safe_rate", "mean_cus", "clamp_distortion", "human_escalation_rate"):
        table.add_row(key, f"{result[key]:.6f}")
    table.add_row("levels L0 / L1 / L2", " / ".join(str(c) for c in result["level_counts"]))
    table.add_row(f"L (weights {weights})", f"{result['L']:.6f}")
    out_console.print(table)


# --------------------------------------------------------------------------- check


@app.command(epilog="See docs/engine.md §13 (the invariants).\n\n"
                    "Example:\nami-engine check traces.jsonl --profile base")
@_command
def check(
    traces: Annotated[str, typer.Argument(help="Traces JSONL to check.")],
    profile: Annotated[str | None, typer.Option(help="Profile whose thresholds the traces must respect.")] = None,
    config: Annotated[Path | None, typer.Option(help="Config TOML whose thresholds the traces must respect.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Invariants of docs/engine.md §13 over a traces file; exit 1 when any is broken."""
    from .check import check_trace_file

    cfg = _config(profile, config)
    violations = check_trace_file(traces, cfg)
    if as_json:
        print(json.dumps({"traces": traces, "config_id": cfg.config_id,
                          "violations": [plain_data(v.to_dict()) for v in violations]}))
    else:
        for v in violations:
            print(v.format(traces))
        status = "OK" if not violations else f"{len(violations)} violation(s)"
        err_console.print(f"check {traces} against {cfg.source}: {status}", highlight=False)
    if violations:
        raise typer.Exit(1)


# ------------------------------------------------------------------------- explain


@app.command(epilog="See docs/engine.md (scores, selection, CUS, reasons).\n\n"
                    "Example:\nami-engine explain --states states.jsonl --line 12 --profile base")
@_command
def explain(
    state: Annotated[str | None, typer.Option(help="One state as a JSON object.")] = None,
    states: Annotated[Path | None, typer.Option(help="States JSONL; pick the decision with --line.")] = None,
    line: Annotated[int | None, typer.Option(help="1-based line of --states (its stream's history is replayed).")]
    = None,
    profile: Annotated[str | None, typer.Option(help="Built-in profile.")] = None,
    config: Annotated[Path | None, typer.Option(help="Config TOML file.")] = None,
    top: Annotated[int, typer.Option(help="Candidates to list.")] = 15,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """One decision laid open: candidates' W, J, H, C, S, margins, distinct scores, DE/AS/CUS, the rule."""
    from .engine import run as engine_run
    from .engine import trace_records
    from .explain import explain_decision
    from .io.states import read_states, states_from_records

    cfg = _config(profile, config)
    if (state is None) == (states is None):
        raise UsageError("give exactly one of --state JSON or --states FILE --line N")
    if state is not None:
        try:
            record = json.loads(state)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--state: not valid JSON: {exc}") from None
        if not isinstance(record, dict):
            raise UsageError("--state: expected a JSON object")
        stateset = states_from_records([record])
        index = 0
    else:
        if line is None:
            raise UsageError("--states needs --line N")
        stateset = read_states(str(states))
        index = _record_index(states, line)
        prefix = np.arange(index + 1)
        stateset = stateset.subset(prefix)
    cols = engine_run(stateset, cfg)
    trace = trace_records(cols, stateset, cfg)[index]
    result = explain_decision(stateset.values[index], cfg, trace)
    if as_json:
        print(json.dumps(plain_data(result)))
        return
    _print_explanation(result, cfg, top)


def _record_index(path: Path, line: int) -> int:
    """Position among the non-blank lines of the record on 1-based `line`."""
    from .io.files import open_text_lines

    index = -1
    for number, text in enumerate(open_text_lines(str(path)), start=1):
        if text.strip():
            index += 1
        if number == line:
            if not text.strip():
                raise UsageError(f"{path}:{line}: blank line, no state there")
            return index
    raise UsageError(f"{path}: --line {line} is past the end of the file")


def _print_explanation(r: dict[str, Any], cfg: Config, top: int) -> None:
    tr = r["trace"]
    out_console.print(f"[bold]State[/] {json.dumps(r['state'])}", highlight=False)
    out_console.print(f"config {cfg.source} ({r['config_id']}); {r['n_actions']} actions, "
                      f"{r['n_candidates']} candidates (J >= {cfg['J_MIN']}, H <= {cfg['H_MAX']}, "
                      f"{cfg['C_MIN']} <= C <= {cfg['C_MAX']})", highlight=False)
    if r["rejected_by"]:
        out_console.print("rejected by: " + ", ".join(f"{k}: {v}" for k, v in r["rejected_by"].items()),
                          highlight=False)
    table = Table(title=f"Candidates by S (top {min(top, r['n_candidates'])} of {r['n_candidates']})")
    for col in ("#", "action", "W", "J", "H", "C", "S", "margin", "confidence"):
        table.add_column(col, justify="right")
    for c in r["candidates"][:top]:
        action = " ".join(f"{x:g}" for x in c["action"])
        table.add_row(str(c["index"]), action, *(f"{c[k]:.4f}" for k in ("W", "J", "H", "C", "S", "margin",
                                                                           "confidence")))
    out_console.print(table)
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


# -------------------------------------------------------------------------- learn


@app.command(epilog="See docs/learning.md.\n\n"
                    "Example:\nami-engine learn --scenario chaos --n 20000 --seed 1 --out out/suggestion.toml")
@_command
def learn(
    out: Annotated[str, typer.Option("--out", help="Suggestion TOML to write (never a profile).")],
    states: Annotated[Path | None, typer.Option(help="States JSONL to learn from.")] = None,
    traces: Annotated[Path | None, typer.Option(help="Traces JSONL whose records carry `state` (replayed).")] = None,
    scenario: Annotated[str | None, typer.Option(help="Scenario to generate: safe, balanced, critical, chaos, "
                                                      "curriculum.")] = None,
    n: Annotated[int | None, typer.Option("--n", help="Number of scenario states.")] = None,
    seed: Annotated[int, typer.Option(help="Seeds everything: scenario, split, search.")] = 0,
    streams: Annotated[int, typer.Option(help="Streams per scenario part.")] = 8,
    profile: Annotated[str | None, typer.Option(help="Baseline profile.")] = None,
    config: Annotated[Path | None, typer.Option(help="Baseline config TOML.")] = None,
    strategy: Annotated[str, typer.Option(help="grid, random, sobol, tpe or cmaes.")] = "tpe",
    budget: Annotated[int, typer.Option(help="Candidate configs to evaluate (baseline included).")] = 300,
    batch_size: Annotated[int, typer.Option(help="Candidates per step (one history line each).")] = 32,
    weights: Annotated[str, typer.Option(help="Loss weights w1,w2,w3.")] = "1.5,1.0,0.5",
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
    study: Annotated[str | None, typer.Option(help="Study database (path = SQLite, or a storage URL); "
                                                   "default OUT.study.sqlite3.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the study's finished evaluations.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Learn a suggested config from states, a scenario or replayable traces. Nothing is applied."""
    from .gate import run_gate
    from .gate.constraints import CriticalFloor
    from .learning.loss import LossWeights
    from .learning.offline_loop import LearnSettings, data_from_scenario, data_from_states_file, data_from_traces_file
    from .learning.offline_loop import learn as run_learn

    given = [x is not None for x in (states, traces, scenario)]
    if sum(given) != 1:
        raise UsageError("give exactly one of --states FILE, --traces FILE or --scenario NAME --n N")
    _refuse_profile_path(out)
    baseline = _config(profile, config)
    try:
        w = LossWeights.parse(weights)
        crit = CriticalFloor(critical_factor, critical_margin)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    options: dict[str, Any] = {}
    if strategy == "random" and perturb:
        options = {"mode": "perturb", "step_scale": step_scale}
    if strategy == "grid" and points_per_axis is not None:
        options = {"points_per_axis": points_per_axis}
    if scenario is not None:
        if n is None:
            raise UsageError("--scenario needs --n N")
        try:
            data = data_from_scenario(scenario, n, seed, streams)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    elif states is not None:
        data = data_from_states_file(str(states))
    else:
        data = data_from_traces_file(str(traces))
    regression_states = None
    if regression is not None:
        from .io.states import read_states

        regression_states = read_states(str(regression), allow_expect_level=True)
    settings = LearnSettings(strategy=strategy, budget=budget, seed=seed, batch_size=batch_size, weights=w,
                             train_fraction=train_fraction, critical=crit, strategy_options=options)
    study_path = study or (str(Path(out).with_suffix("")) + ".study.sqlite3")
    if "://" not in study_path:
        Path(study_path).parent.mkdir(parents=True, exist_ok=True)
    if not resume and "://" not in study_path and Path(study_path).exists():
        Path(study_path).unlink()
    with _progress("learning", budget) as progress:
        result = run_learn(data, baseline, settings, regression=regression_states, study=study_path,
                           gate_fn=run_gate, progress=progress)
    if history is not None:
        lines = (json.dumps(plain_data(h), separators=(", ", ": ")).encode() + b"\n" for h in result.history)
        _write_bytes(history, lines)
    if result.accepted:
        _write_bytes(out, [dumps_toml(result.suggestion_toml).encode()])
    if report is not None:
        from .engine import run as engine_run
        from .engine import trace_records
        from .report import render_report

        # The trace panels show the suggestion deciding the held-out data.
        held = result.held_out
        records = trace_records(engine_run(held, result.suggestion), held, result.suggestion)
        html = render_report(toml_ready(result.suggestion_toml), result.history, records)
        _write_bytes(report, [html.encode()])
    if as_json:
        print(json.dumps(plain_data({"accepted": result.accepted, "suggestion": out if result.accepted else None,
                                    **result.suggestion_toml})))
    else:
        _print_learn_summary(result, out)
    if not result.accepted:
        raise typer.Exit(1)


def _refuse_profile_path(out: str) -> None:
    """A suggestion is never written over a built-in profile."""
    from importlib import resources

    target = Path(out).resolve()
    profiles = resources.files("ami_engine.config").joinpath("profiles")
    for name in PROFILE_NAMES:
        if target == Path(str(profiles.joinpath(f"{name}.toml"))).resolve():
            raise UsageError(f"--out {out}: refusing to write over the built-in profile {name}")


def _print_learn_summary(result, out: str) -> None:
    meta = result.suggestion_toml["meta"]
    m = meta["metrics"]
    table = Table(title=f"Baseline {meta['baseline']} vs suggestion ({meta['strategy']}, budget {meta['budget']}, "
                        f"seed {meta['seed']})")
    table.add_column("metric")
    for part in ("train", "held-out"):
        table.add_column(f"{part} baseline", justify="right")
        table.add_column(f"{part} suggestion", justify="right")
        table.add_column("change", justify="right")
    for key in ("L", "fail_safe_rate", "mean_cus", "clamp_distortion"):
        row = [key]
        for part in ("train", "heldout"):
            b, s = m[part]["baseline"][key], m[part]["suggestion"][key]
            change = f"{(s - b) / b * 100:+.1f}%" if b else "n/a"
            row += [f"{b:.4f}", f"{s:.4f}", change]
        table.add_row(*row)
    out_console.print(table)
    params = Table(title="Learned parameters")
    for col in ("parameter", "baseline", "suggestion", "bounds", ""):
        params.add_column(col)
    for name, (lo, hi) in meta["bounds"].items():
        flag = "on bound" if name in meta["params_on_bound"] else ""
        params.add_row(name, f"{meta['baseline_params'][name]:.4g}", f"{result.suggestion_toml[name]:.4g}",
                       f"[{lo}, {hi}]", flag)
    out_console.print(params)
    nd = result.needless
    out_console.print(
        f"[bold]Needless fail-safes[/]: {nd['count']} of {nd['baseline_l2']} baseline fail-safes "
        f"({nd['n']} decisions) are not fail-safes under the suggestion.", highlight=False)
    if nd["by_reason"]:
        out_console.print("  by baseline reason: " + ", ".join(f"{k} {v}" for k, v in nd["by_reason"].items()),
                          highlight=False)
    for sentence in nd["summary"]:
        out_console.print(f"  where {sentence}", highlight=False)
    if result.gate is not None:
        colour = "green" if result.accepted else "red"
        out_console.print(f"gate: [bold {colour}]{result.gate.verdict}[/]", highlight=False)
    if result.accepted:
        out_console.print(f"suggestion written to {out} (not applied; review it, then `ami-engine apply`)",
                          highlight=False)
    else:
        out_console.print("[bold red]no candidate passed the gate[/]: no suggestion written", highlight=False)


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
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Safety gate: ACCEPT (exit 0) or REJECT (exit 1), with every check's figure and threshold."""
    from .gate import CriticalFloor, GateThresholds, gate_suggestion_file

    try:
        thresholds = GateThresholds(CriticalFloor(critical_factor, critical_margin))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    report = gate_suggestion_file(suggestion, baseline=baseline, regression=str(regression) if regression else None,
                                  thresholds=thresholds)
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
) -> None:
    """Write an approved suggestion to a new profile: only after the gate ACCEPTs it again."""
    from .gate.approval import ApplyRefused, apply_suggestion

    try:
        result = apply_suggestion(suggestion, approved_by=approved_by, out=out, force=force, audit_log=audit_log,
                                  baseline=baseline, regression=str(regression) if regression else None)
    except ApplyRefused as exc:
        err_console.print(f"[bold red]refused:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None
    out_console.print(f"profile written to {result.profile_path}; audit line appended to {result.audit_log}",
                      highlight=False)


# ------------------------------------------------------------------------- report


@app.command(epilog="See docs/learning.md (what the report shows), docs/glossary.md.\n\n"
                    "Example:\nami-engine report --suggestion suggestion.toml --out report.html")
@_command
def report(
    suggestion: Annotated[str, typer.Option(help="Suggestion TOML.")],
    out: Annotated[str, typer.Option("--out", help="HTML file to write.")],
    history: Annotated[str | None, typer.Option(help="History JSONL from learn.")] = None,
    traces: Annotated[str | None, typer.Option(help="Traces JSONL for the trace panels.")] = None,
) -> None:
    """One self-contained HTML page: learning curves, baseline vs suggestion, traces, gate, needless fail-safes."""
    from .io.traces import read_trace_records
    from .report import TRACE_KEYS, render_report

    with open(suggestion, "rb") as fh:
        doc = tomllib.load(fh)
    hist = _read_history(history) if history else None
    recs = read_trace_records(traces, keys=TRACE_KEYS) if traces else None
    _write_bytes(out, [render_report(doc, hist, recs).encode()])


def _read_history(path: str) -> list[dict[str, Any]]:
    from .io.files import InputError, open_text_lines

    rows = []
    for number, text in enumerate(open_text_lines(path), start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{number}: not valid JSON: {exc.msg}") from None
        if not isinstance(row, dict) or "step" not in row or "L" not in row:
            raise InputError(f"{path}:{number}: step: a history line needs at least `step` and `L`")
        rows.append(row)
    return rows


# ------------------------------------------------------------------------ profiles


@app.command(epilog="See docs/engine.md §14 (parameters and profiles).\n\n"
                    "Example:\nami-engine profiles production_safe")
@_command
def profiles(name: Annotated[str | None, typer.Argument(help="Show this profile's TOML and effective values.")]
             = None) -> None:
    """List the built-in profiles, or show one."""
    if name is None:
        table = Table(title="Built-in profiles")
        for col in ("profile", "J_MIN", "H_MAX", "C_MIN", "C_MAX", "J_CRITICAL", "H_CRITICAL", "CONF_FORCE",
                    "config_id"):
            table.add_column(col)
        for p in PROFILE_NAMES:
            c = load_config(p)
            table.add_row(p, *(f"{c[k]:g}" for k in ("J_MIN", "H_MAX", "C_MIN", "C_MAX", "J_CRITICAL", "H_CRITICAL",
                                                     "CONFIDENCE_ESCALATION_FORCE")), c.config_id)
        out_console.print(table)
        return
    cfg = load_config(name)
    print(profile_text(name).rstrip())
    print(f"\n# effective values (config_id {cfg.config_id})")
    for key, value in cfg.to_dict().items():
        print(f"# {key} = {json.dumps(value)}")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
