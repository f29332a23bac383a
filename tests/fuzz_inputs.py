"""Valid inputs of every reader, byte mutations of them, and the rule a reader must keep.

Shared by tests/test_fuzz.py (a small, seeded Hypothesis run in CI) and
scripts/fuzz_readers.py (thousands of mutations per reader). A reader given any bytes
either returns, or raises one of the errors the command line turns into exit 2 with a
one-line message that names the file. Anything else is a crash.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATE = {"physical": 0.5, "social": 0.4, "context": 0.6, "risk": 0.7, "compassion": 0.5, "justice": 0.5,
         "harm_sens": 0.5, "responsibility": 0.5, "empathy": 0.5}


def _lines(records: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def trace_record(i: int) -> dict[str, Any]:
    level = i % 3
    return {
        "t": i, "cus": 0.3, "cus_raw": 0.3, "delta_cus": None if i == 0 else 0.01, "cus_mean": 0.3,
        "raw_action": [0.5, 0.5, 0.0, 1.0],
        "final_action": [0.0, 0.5, 0.0, 1.0] if level == 2 else [0.5, 0.5, 0.0, 1.0],
        "soft_clamp": level == 1, "level": level, "confidence": 0.8, "delta_confidence": 0.02 if level == 1 else None,
        "human_escalation": level == 2, "chaos": False, "model": "ami-v1", "reason": "normal",
        "W": 0.6, "J": 0.9, "H": 0.1, "C": 0.5, "stream": "a", "id": f"s{i}", "state": STATE,
        "config_id": "0123456789abcdef", "uncertainty": 0.1,
    }


STATES = _lines([{**STATE, "stream": f"s{i % 2}", "id": f"s{i}", "t": i} for i in range(6)])
REGRESSION = _lines([{**STATE, "id": "r0", "expect_level_min": 1}, {**STATE, "risk": 0.1, "expect_level_min": 0}])
TRACES = _lines([trace_record(i) for i in range(6)])
CONFIG = b"""extends = "base"
J_MIN = 0.8
H_MAX = 0.3
CUS_MEAN_WINDOW = 5
ACTION_GRID = [0.0, 0.5, 1.0]

[meta]
note = "hand-written"
"""
# The SHA-256 of scenario balanced, n 40, seed 3, 8 streams: the suggestion's data is found.
SCENARIO_SHA256 = "5798644f23d9d300bb7a433d47a6b6ff05a070d805815a71275264c561d507b4"
SUGGESTION = b"""extends = "base"
J_MIN = 0.7
H_MAX = 0.35
SOFT_CLAMP_ALPHA = 0.6
SOFT_CLAMP_BETA = 0.6
SOFT_CLAMP_GAMMA = 0.4
DELTA_CUS_THRESHOLD = 0.1
CUS_MEAN_THRESHOLD = 0.7

[meta]
seed = 3
loss_weights = [1.5, 1.0, 0.5]

[meta.data]
source = "scenario"
sha256 = "%s"

[meta.data.scenario]
name = "balanced"
n = 40
seed = 3
streams = 8

[meta.split]
method = "by_stream"
train_fraction = 0.8
seed = 3
n_heldout = 10
""" % SCENARIO_SHA256.encode()
HISTORY = _lines([{"step": s, "L": 1.0 - s / 10, "fail_safe_rate": 0.2, "mean_cus": 0.4, "clamp_distortion": 0.01,
                   "J_MIN": 0.8} for s in range(3)])

# Byte strings that reach the corners of the readers: bad UTF-8, markup, numbers that do
# not fit, deep nesting, line ends, gzip magic.
TOKENS: tuple[bytes, ...] = (
    b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"[/x]", b"[bold]", b"[meta.data]", b"NaN", b"Infinity", b"-Infinity",
    b"1e400", b"-1e400", b"1e11", b"9223372036854775807", b"99999999999999999999999999", b"-1", b"true", b"null",
    b'"x"', b"[]", b"{}", b"\"", b"{", b"}", b"[", b"]", b",", b":", b"=", b"\n", b"\r\n", b"\\u0000", b"\\ud800",
    b"\x1f\x8b", b"[" * 100_000, b"{\"a\":" * 100_000, b"a = [" * 5_000, b"[[x]]\n", b"[meta]\n",
    b"extends = \"base\"\n", b"\"stream\": [1]", b"\"n\": 1e11", b"n = 100000000000\n", b"seed = \"x\"\n",
    b"CUS_MEAN_WINDOW = 9223372036854775807\n",
)

KINDS = ("flip", "set", "delete", "insert", "token", "duplicate", "truncate")


@dataclass(frozen=True)
class Mutation:
    """One edit of a byte string; `where` and `size` are shares of its length, so that the
    same mutation applies to inputs of any length."""

    kind: str
    where: float
    size: float = 0.0
    byte: int = 0
    token: int = 0


def mutate(data: bytes, mutations: list[Mutation]) -> bytes:
    out = bytearray(data)
    for m in mutations:
        n = len(out)
        at = min(int(m.where * n), n)
        span = max(1, int(m.size * min(n, 64)))
        if m.kind == "flip" and n:
            out[min(at, n - 1)] ^= 1 << (m.byte % 8)
        elif m.kind == "set" and n:
            out[min(at, n - 1)] = m.byte
        elif m.kind == "delete":
            del out[at:at + span]
        elif m.kind == "insert":
            out[at:at] = bytes([m.byte]) * span
        elif m.kind == "token":
            out[at:at] = TOKENS[m.token % len(TOKENS)]
        elif m.kind == "duplicate":
            out[at:at] = out[at:at + span]
        elif m.kind == "truncate":
            del out[at:]
    return bytes(out)


# Values a hand-edited or tampered TOML file may hold where another was expected.
VALUES: tuple[Any, ...] = ("x", "", "[/x]", True, -1, 0, 10**11, 2**63 - 1, -(2**63), 1e11, 0.5, float("nan"),
                           float("inf"), [], [1, "a"], {}, {"a": 1})


def tamper_toml(data: bytes, mutations: list[Mutation]) -> bytes:
    """A TOML document with some of its values (anywhere, tables included) replaced."""
    import tomli_w

    doc = tomllib.loads(data.decode())
    for m in mutations:
        paths = _leaf_paths(doc, ())
        *parents, key = paths[min(int(m.where * len(paths)), len(paths) - 1)]
        table = doc
        for name in parents:
            table = table[name]
        if m.kind == "delete":
            del table[key]
        else:
            table[key] = VALUES[m.token % len(VALUES)]
    return tomli_w.dumps(doc).encode()


def _leaf_paths(table: dict[str, Any], prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
    paths = []
    for key, value in table.items():
        paths.append((*prefix, key))
        if isinstance(value, dict):
            paths.extend(_leaf_paths(value, (*prefix, key)))
    return paths


def random_mutations(rng: random.Random) -> list[Mutation]:
    return [Mutation(rng.choice(KINDS), rng.random(), rng.random(), rng.randrange(256), rng.randrange(len(TOKENS)))
            for _ in range(rng.randint(1, 4))]


# --------------------------------------------------------------------------- readers


def _states(path: str) -> None:
    from ami_engine.io.states import read_states

    read_states(path)


def _regression(path: str) -> None:
    from ami_engine.io.states import read_states

    read_states(path, allow_expect_level=True)


def _traces(path: str) -> None:
    from ami_engine.check import check_trace_file
    from ami_engine.config import load_config
    from ami_engine.io.traces import read_trace_records, read_trace_states, read_traces
    from ami_engine.learning.feedback_metrics import metrics_from_traces

    read_traces(path)
    read_trace_states(path)
    read_trace_records(path)
    metrics_from_traces(path, workers=1)
    check_trace_file(path, load_config("base"))


def _config(path: str) -> None:
    from ami_engine.config import load_config

    load_config(path)


def _suggestion(path: str) -> None:
    from ami_engine.suggestion import read_suggestion

    suggestion = read_suggestion(path)
    suggestion.baseline()
    suggestion.held_out()


def _history(path: str) -> None:
    from ami_engine.io.history import read_history

    read_history(path)


@dataclass(frozen=True)
class Reader:
    name: str
    suffix: str
    valid: bytes
    read: Callable[[str], None]
    mutator: Callable[[bytes, list[Mutation]], bytes] = mutate


READERS: tuple[Reader, ...] = (
    Reader("states", ".jsonl", STATES, _states),
    Reader("states.gz", ".jsonl.gz", gzip.compress(STATES, mtime=0), _states),
    Reader("regression", ".jsonl", REGRESSION, _regression),
    Reader("traces", ".jsonl", TRACES, _traces),
    Reader("traces.gz", ".jsonl.gz", gzip.compress(TRACES, mtime=0), _traces),
    Reader("config", ".toml", CONFIG, _config),
    Reader("config.gz", ".toml.gz", gzip.compress(CONFIG, mtime=0), _config),
    Reader("suggestion", ".toml", SUGGESTION, _suggestion),
    Reader("config.values", ".toml", CONFIG, _config, tamper_toml),
    Reader("suggestion.values", ".toml", SUGGESTION, _suggestion, tamper_toml),
    Reader("history", ".jsonl", HISTORY, _history),
)
READER_BY_NAME = {r.name: r for r in READERS}


def clean_errors() -> tuple[type[BaseException], ...]:
    from ami_engine.cli import input_errors

    return input_errors()


def outcome(reader: Reader, data: bytes, folder: Path) -> str:
    """`ok`, `error` (a clean one) or a description of the crash."""
    path = folder / f"input{reader.suffix}"
    path.write_bytes(data)
    try:
        reader.read(str(path))
    except clean_errors() as exc:
        text = str(exc)
        if "\n" in text or str(path) not in text:
            return f"unclear message: {type(exc).__name__}: {text[:200]!r}"
        return "error"
    except Exception as exc:  # noqa: BLE001 - a crash is what is looked for
        return f"crash: {type(exc).__name__}: {str(exc)[:200]}"
    finally:
        os.unlink(path)
    return "ok"
