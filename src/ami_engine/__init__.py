"""AMI engine: a decision regulator and the offline loop that tunes its thresholds.

The names a user needs, from a notebook or a script:

    cfg = ami_engine.load_config("base")                    # a profile, or a TOML file
    ami_engine.decide(state, cfg)                           # one decision -> its trace record
    cols = ami_engine.run(states, cfg)                      # many -> trace columns
    ami_engine.write_traces("traces.jsonl", cols, states, config_id=cfg.config_id,
                            model=ami_engine.ENGINE_MODEL, chaos=False)
    result = ami_engine.learn(ami_engine.data_from_scenario("chaos", 5000, seed=1), cfg,
                              ami_engine.LearnSettings(budget=64), gate_fn=ami_engine.run_gate)

Each name is imported on first use, so `import ami_engine` stays cheap.
"""

from __future__ import annotations

# typing and importlib are left unimported until needed: `import ami_engine` (and so every
# command's start-up) pays for nothing it does not use.
TYPE_CHECKING = False

__version__ = "0.1.0"
ENGINE_MODEL = "ami-v1"

# public name -> module that defines it
_PUBLIC: dict[str, str] = {
    # errors and their exit codes
    "AmiEngineError": ".errors",
    "InputError": ".errors",
    "UsageError": ".errors",
    "GateRejected": ".errors",
    "ConfigError": ".config",
    # configs and profiles
    "Config": ".config",
    "PROFILE_NAMES": ".config",
    "load_config": ".config",
    "parse_config": ".config",
    # states
    "STATE_FIELDS": ".io.stateset",
    "StateSet": ".io.stateset",
    "read_states": ".io.states",
    "states_from_records": ".io.states",
    "generate": ".scenario",
    # the engine
    "ScoreTable": ".engine",
    "EngineSums": ".engine",
    "decide": ".engine",
    "run": ".engine",
    "trace_records": ".engine",
    # traces
    "read_traces": ".io.traces",
    "read_trace_records": ".io.traces",
    "iter_trace_chunks": ".io.traces",
    "write_traces": ".io.traces",
    # learning
    "LearnData": ".learning.offline_loop",
    "LearnResult": ".learning.offline_loop",
    "LearnSettings": ".learning.offline_loop",
    "data_from_scenario": ".learning.offline_loop",
    "data_from_states_file": ".learning.offline_loop",
    "data_from_traces_file": ".learning.offline_loop",
    "learn": ".learning.offline_loop",
    "LossWeights": ".learning.loss",
    "SearchSpace": ".learning.policy_optimizer",
    "Strategy": ".learning.policy_optimizer",
    "STRATEGIES": ".learning.policy_optimizer",
    "make_strategy": ".learning.policy_optimizer",
    "StudyStorage": ".learning.study",
    "JournalStorage": ".learning.study",
    "SqliteStorage": ".learning.study",
    "PostgresStorage": ".learning.study",
    "InMemoryStorage": ".learning.study",
    # the gate and apply
    "CriticalFloor": ".gate",
    "GateReport": ".gate",
    "GateThresholds": ".gate",
    "gate_suggestion_file": ".gate",
    "run_gate": ".gate",
    "apply_suggestion": ".gate",
}

if TYPE_CHECKING:
    from typing import Any

    from .config import PROFILE_NAMES, Config, ConfigError, load_config, parse_config
    from .engine import ScoreTable, decide, run, trace_records
    from .errors import AmiEngineError, GateRejected, InputError, UsageError
    from .gate import CriticalFloor, GateReport, GateThresholds, apply_suggestion, gate_suggestion_file, run_gate
    from .io.states import read_states, states_from_records
    from .io.stateset import STATE_FIELDS, StateSet
    from .io.traces import iter_trace_chunks, read_trace_records, read_traces, write_traces
    from .learning.loss import LossWeights
    from .learning.offline_loop import (
        LearnData,
        LearnResult,
        LearnSettings,
        data_from_scenario,
        data_from_states_file,
        data_from_traces_file,
        learn,
    )
    from .learning.policy_optimizer import STRATEGIES, SearchSpace, Strategy, make_strategy
    from .learning.study import InMemoryStorage, JournalStorage, PostgresStorage, SqliteStorage, StudyStorage
    from .scenario import generate


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


__all__ = [
    "AmiEngineError",
    "CriticalFloor",
    "Config",
    "ConfigError",
    "ENGINE_MODEL",
    "GateRejected",
    "GateReport",
    "GateThresholds",
    "InMemoryStorage",
    "InputError",
    "JournalStorage",
    "LearnData",
    "LearnResult",
    "LearnSettings",
    "LossWeights",
    "PROFILE_NAMES",
    "PostgresStorage",
    "STATE_FIELDS",
    "STRATEGIES",
    "ScoreTable",
    "SearchSpace",
    "SqliteStorage",
    "StateSet",
    "Strategy",
    "StudyStorage",
    "UsageError",
    "__version__",
    "apply_suggestion",
    "data_from_scenario",
    "data_from_states_file",
    "data_from_traces_file",
    "decide",
    "gate_suggestion_file",
    "generate",
    "iter_trace_chunks",
    "learn",
    "load_config",
    "make_strategy",
    "parse_config",
    "read_states",
    "read_trace_records",
    "read_traces",
    "run",
    "run_gate",
    "states_from_records",
    "trace_records",
    "write_traces",
]
