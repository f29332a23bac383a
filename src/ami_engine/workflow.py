"""A learning run from files to files: what `ami-engine learn` does, as a Python API.

    plan_learn(...)          the options checked before any work: one input, at most one
                             `-` each way, never a built-in profile as output, what to do
                             with a study already there
    run_learn_job(job, ...)  the data read, the search run through the gate, and the run's
                             outputs (history, report, suggestion) written as one set

The outputs of a run are one set, written together: the history, the report and the
suggestion when the gate ACCEPTed one. On REJECT there is no suggestion, and a suggestion
at `out` from an earlier run is removed rather than left beside this run's history and
report. Messages name the command-line options, as a person at the command line sees them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import PROFILE_NAMES, Config
from .errors import UsageError

REPORT_TRACE_DECISIONS = 50_000  # the most held-out decisions whose traces the report shows

__all__ = ["LearnJob", "LearnOutcome", "plan_learn", "run_learn_job", "study_path"]


@dataclass(frozen=True)
class LearnJob:
    """A learning run's inputs, outputs and settings, checked (plan_learn) but not yet run.

    Exactly one of `states`, `traces` and `scenario` is set; `study` is where finished
    evaluations are kept and `existing_study` what to do with a study already there
    ("refuse", "resume" or "fresh")."""

    out: str
    study: str
    existing_study: str
    states: str | None = None
    traces: str | None = None
    scenario: str | None = None
    n: int | None = None
    seed: int = 0
    streams: int = 8
    strategy: str = "tpe"
    strategy_options: dict[str, Any] = field(default_factory=dict)
    budget: int = 300
    batch_size: int = 32
    train_fraction: float = 0.8
    regression: str | None = None
    history: str | None = None
    report: str | None = None
    drop_unknown: bool = False
    memory: int | None = None  # bytes learning may hold; None: the loop's default


@dataclass(frozen=True)
class LearnOutcome:
    """A finished run: the loop's result, and whether a suggestion an earlier run left at
    `out` was removed (this run has none to put there)."""

    result: Any  # learning.offline_loop.LearnResult
    removed_earlier: bool


def study_path(study: str | None, out: str) -> str:
    """The study location: `study` when given, else OUT.study.journal beside the output."""
    return study or (str(Path(out).with_suffix("")) + ".study.journal")


def plan_learn(
    *,
    out: str,
    states: str | None = None,
    traces: str | None = None,
    scenario: str | None = None,
    n: int | None = None,
    seed: int = 0,
    streams: int = 8,
    strategy: str = "tpe",
    budget: int = 300,
    batch_size: int = 32,
    train_fraction: float = 0.8,
    regression: str | None = None,
    perturb: bool = False,
    step_scale: float = 0.1,
    points_per_axis: int | None = None,
    history: str | None = None,
    report: str | None = None,
    study: str | None = None,
    resume: bool = False,
    fresh: bool = False,
    drop_unknown: bool = False,
    memory: int | None = None,
) -> LearnJob:
    """Check a run's options before any work, so that a run refused here changes no file."""
    if sum(x is not None for x in (states, traces, scenario)) != 1:
        raise UsageError("give exactly one of --states FILE, --traces FILE or --scenario NAME --n N")
    _one_dash("input can be read from stdin", {"--states": states, "--traces": traces, "--regression": regression})
    _one_dash("output can be written to stdout", {"--out": out, "--history": history, "--report": report})
    refuse_overwriting_inputs({"--out": out, "--history": history, "--report": report, "--study": study},
                              {"--states": states, "--traces": traces, "--regression": regression})
    _refuse_profile_path(out)
    location, existing = _study_plan(study, out, resume, fresh)
    if drop_unknown and states is None:
        raise UsageError("--drop-unknown applies to --states FILE only")
    options: dict[str, Any] = {}
    if strategy == "random" and perturb:
        options = {"mode": "perturb", "step_scale": step_scale}
    if strategy == "grid" and points_per_axis is not None:
        options = {"points_per_axis": points_per_axis}
    return LearnJob(out=out, study=location, existing_study=existing, states=states, traces=traces,
                    scenario=scenario, n=n, seed=seed, streams=streams, strategy=strategy, strategy_options=options,
                    budget=budget, batch_size=batch_size, train_fraction=train_fraction, regression=regression,
                    history=history, report=report, drop_unknown=drop_unknown, memory=memory)


def run_learn_job(
    job: LearnJob,
    baseline: Config,
    *,
    weights: str = "1.5,1.0,0.5",
    critical_factor: float = 0.25,
    critical_margin: float = 0.02,
    progress: Callable[[int, int], None] | None = None,
    evaluator: Callable[..., Any] | None = None,
) -> LearnOutcome:
    """Run a planned job from `baseline` and write its outputs as one set; `evaluator` is
    passed to learn (e.g. shards kept on a Dask cluster)."""
    from .gate import run_gate
    from .gate.constraints import CriticalFloor
    from .gate.yardstick import check_baseline
    from .io.files import write_outputs
    from .learning.loss import LossWeights
    from .learning.offline_loop import LearnSettings, learn

    # A suggestion learned from a weakened baseline would never pass the gate; its floor on
    # the critical set is the stricter of the baseline's and the yardstick's, as the gate's.
    yardstick = check_baseline(baseline).config
    try:
        w = LossWeights.parse(weights)
        crit = CriticalFloor(critical_factor, critical_margin, anchor=yardstick)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    data = _learn_data(job)
    regression_states = None
    if job.regression is not None:
        from .io.states import read_states

        regression_states = read_states(job.regression, allow_expect_level=True)
    settings = LearnSettings(strategy=job.strategy, budget=job.budget, seed=job.seed, batch_size=job.batch_size,
                             weights=w, train_fraction=job.train_fraction, critical=crit,
                             strategy_options=job.strategy_options,
                             **({} if job.memory is None else {"memory": job.memory}))
    if "://" not in job.study:
        Path(job.study).parent.mkdir(parents=True, exist_ok=True)
    # A StudyError here means the study was taken, or changed, since plan_learn checked it.
    result = learn(data, baseline, settings, regression=regression_states, study=job.study, gate_fn=run_gate,
                   progress=progress, existing_study=job.existing_study, evaluator=evaluator)
    removed_earlier = not result.accepted and job.out != "-" and Path(job.out).is_file()
    write_outputs(_outputs(job, result))
    return LearnOutcome(result, removed_earlier)


def _learn_data(job: LearnJob) -> Any:
    from .learning.offline_loop import data_from_scenario, data_from_states_file, data_from_traces_file

    if job.scenario is not None:
        if job.n is None:
            raise UsageError("--scenario needs --n N")
        try:
            return data_from_scenario(job.scenario, job.n, job.seed, job.streams)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if job.states is not None:
        return data_from_states_file(job.states, drop_unknown=job.drop_unknown)
    assert job.traces is not None
    return data_from_traces_file(job.traces)


def _outputs(job: LearnJob, result: Any) -> dict[str, bytes | None]:
    """Path -> bytes of every output of the run; None for a file of an earlier run to remove."""
    from .io.tomlfile import dumps_toml, plain_data, toml_ready

    outputs: dict[str, bytes | None] = {}
    if job.history is not None:
        outputs[job.history] = b"".join(json.dumps(plain_data(h), separators=(", ", ": ")).encode() + b"\n"
                                        for h in result.history)
    if result.accepted:
        from .suggestion import suggestion_document

        regression = Path(job.regression) if job.regression is not None else None
        outputs[job.out] = dumps_toml(suggestion_document(result.suggestion_toml, job.out,
                                                          regression=regression)).encode()
    else:
        outputs[job.out] = None
    if job.report is not None:
        from .engine import run as engine_run
        from .engine import trace_records
        from .report import render_report

        # The trace panels show the suggestion deciding the held-out data (its first whole
        # streams, up to REPORT_TRACE_DECISIONS decisions: one dict per decision is kept).
        held, note = report_traces_states(result.held_out, keys=result.held_out_keys)
        records = trace_records(engine_run(held, result.suggestion), held, result.suggestion)
        outputs[job.report] = render_report(toml_ready(result.suggestion_toml), result.history, records,
                                            traces_note=note).encode()
    return outputs


def report_traces_states(held_out: Any, limit: int = REPORT_TRACE_DECISIONS,
                         keys: Callable[[Any], Any] | None = None) -> tuple[Any, str | None]:
    """The held-out states whose traces the report shows, and what the report says of the cut
    (None when they are all shown): the whole streams, in order of first appearance, that
    fit in `limit` decisions (at least the first stream). `keys(positions)`: those held-out
    states with their t and ids, when `held_out` does not keep them."""
    import numpy as np

    n = len(held_out)
    if n <= limit:
        return (held_out if keys is None else keys(np.arange(n))), None
    codes, n_streams = held_out.stream_codes()
    sizes = np.bincount(codes, minlength=n_streams)
    kept = max(1, int(np.searchsorted(np.cumsum(sizes), limit, side="right")))
    positions = np.flatnonzero(codes < kept)
    note = (f"The report shows the suggestion's traces on the first {kept:,} of the {n_streams:,} held-out streams, "
            f"whole: {positions.size:,} of the {n:,} held-out decisions (at most {limit:,}).")
    return (held_out.subset(positions) if keys is None else keys(positions)), note


def refuse_overwriting_inputs(outputs: dict[str, Any], inputs: dict[str, Any]) -> None:
    """UsageError when an output (option -> path) would replace an input: the run would
    destroy what it reads, and a suggestion would name data that is no longer there."""
    from .io.files import overwrites_input

    for option, path in outputs.items():
        clash = overwrites_input(path, inputs)
        if clash is not None:
            raise UsageError(f"{option} {path}: is the {clash} input (or inside it); give another output")


def _one_dash(what: str, paths: dict[str, str | None]) -> None:
    """stdin is read once and stdout holds one file: at most one of `paths` (option -> value)
    may be `-`."""
    named = [option for option, v in paths.items() if v is not None and str(v) == "-"]
    if len(named) > 1:
        raise UsageError(f"{' and '.join(named)}: only one {what} (-)")


def _study_plan(study: str | None, out: str, resume: bool, fresh: bool) -> tuple[str, str]:
    """The study location and what to do with an existing study there."""
    from .learning.study import (
        FRESH,
        REFUSE,
        RESUME,
        StudyError,
        StudyExistsError,
        finished_evaluations,
        study_location,
    )

    if resume and fresh:
        raise UsageError("--resume and --fresh are mutually exclusive")
    path = study_path(study, out)
    try:
        location = study_location(path)
        finished = finished_evaluations(location)
    except StudyError as exc:
        raise UsageError(f"--study: {exc}") from None
    if finished is not None and not (resume or fresh):
        raise UsageError(str(StudyExistsError(location, finished)))
    return path, RESUME if resume else FRESH if fresh else REFUSE


def _refuse_profile_path(out: str) -> None:
    """A suggestion is never written over a built-in profile."""
    from importlib import resources

    target = Path(out).resolve()
    profiles = resources.files("ami_engine.config").joinpath("profiles")
    for name in PROFILE_NAMES:
        if target == Path(str(profiles.joinpath(f"{name}.toml"))).resolve():
            raise UsageError(f"--out {out}: refusing to write over the built-in profile {name}")
