"""From an accepted suggestion to a profile: gate again, a named approver, an audit line.

Nothing reaches a profile file without an accepting gate run at the moment of writing and
a person's name (docs/gate.md: learning output is never applied automatically).
The profile is written atomically; the audit log (JSONL) gets one line per profile
written. A refusal writes nothing at all: no profile, no audit line.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from .. import __version__
from ..config import LEARNED_BOUNDS, PROFILE_NAMES, Config, load_config, parse_config
from ..io.files import atomic_output
from ..io.stateset import StateSet
from ..io.tomlfile import dumps_toml
from .gate import GateReport, GateThresholds, gate_suggestion_file, suggestion_baseline

AUDIT_LOG_NAME = "ami-engine-audit.jsonl"


class ApplyRefused(Exception):
    """The suggestion is not written, and nothing else is (exit code 1)."""


@dataclass(frozen=True)
class ApplyResult:
    profile_path: str
    audit_log: str
    config_id: str
    gate: GateReport
    audit_entry: dict[str, Any]


def apply_suggestion(suggestion_path: str | Path, *, approved_by: str, out: str | Path, force: bool = False,
                     audit_log: str | Path | None = None, baseline: str | Config | None = None,
                     regression: str | StateSet | None = None,
                     thresholds: GateThresholds | None = None) -> ApplyResult:
    """Write the suggestion as a profile at `out` if the gate accepts it again, and append
    who approved it, when, and the digests of both files to the audit log (default:
    `ami-engine-audit.jsonl` next to the profile). Raises ApplyRefused otherwise."""
    approver = (approved_by or "").strip()
    if not approver:
        raise ApplyRefused("--approved-by: the name of the person approving the suggestion is required")
    source, target = Path(suggestion_path), Path(out)
    log = Path(audit_log) if audit_log is not None else target.parent / AUDIT_LOG_NAME
    suggestion = load_config(str(source))
    if not source.is_file():
        raise ApplyRefused(f"{source}: a built-in profile is not a suggestion; give a suggestion file")
    original = source.read_bytes()
    extended = _extends_file(suggestion, source)
    _refuse_bad_target(source, target, extended, force)
    if _same_file(log, target) or _same_file(log, source) or log.is_dir():
        raise ApplyRefused(f"--audit-log {log}: must be a log file of its own, not the profile or the suggestion")

    report = gate_suggestion_file(source, baseline, regression, thresholds=thresholds)
    if not report.accepted:
        raise ApplyRefused(f"the gate REJECTs {source} (failed: {', '.join(report.failed)}); nothing applied")
    if source.read_bytes() != original:
        raise ApplyRefused(f"{source} changed while it was being gated; nothing applied")

    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    suggestion_sha = hashlib.sha256(original).hexdigest()
    doc = _profile_doc(suggestion, source, target, extended)
    doc["meta"] = {
        "approved_by": approver,
        "approved_at": now,
        "suggestion": str(source.resolve()),
        "suggestion_sha256": suggestion_sha,
        "config_id": suggestion.config_id,
        "gate": report.to_meta(),
    }
    text = dumps_toml(doc).encode()
    target.parent.mkdir(parents=True, exist_ok=True)  # a relative `extends` is read from this folder
    written = parse_config(tomllib.loads(text.decode()), str(target))
    if written.config_id != suggestion.config_id:  # never write a profile that says something else
        raise ApplyRefused(f"--out {target}: the profile would have config_id {written.config_id}, the suggestion "
                           f"{suggestion.config_id}; nothing applied")

    log.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(target) as fh:
        fh.write(text)
    entry = {
        "event": "apply",
        "tool_version": __version__,
        "when": now,
        "who": approver,
        "suggestion": str(source.resolve()),
        "suggestion_sha256": suggestion_sha,
        "profile": str(target.resolve()),
        "profile_sha256": hashlib.sha256(text).hexdigest(),
        "config_id": suggestion.config_id,
        "baseline_config_id": report.baseline_id,
        "verdict": report.verdict,
        "checks": report.figures(),
    }
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")
    return ApplyResult(str(target), str(log), suggestion.config_id, report, entry)


def _same_file(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def _builtin_profile_files() -> list[Path]:
    folder = resources.files("ami_engine.config").joinpath("profiles")
    return [Path(str(folder.joinpath(f"{name}.toml"))) for name in PROFILE_NAMES]


def _extends_file(suggestion: Config, source: Path) -> Path | None:
    """The file the suggestion extends (a relative path is read from its folder), or None
    for a built-in profile."""
    if suggestion.extends is None or suggestion.extends in PROFILE_NAMES:
        return None
    return Path(os.path.abspath(source.parent / suggestion.extends))


def _refuse_bad_target(source: Path, target: Path, extended: Path | None, force: bool) -> None:
    if str(target) == "-" or target.name.endswith(".gz"):
        raise ApplyRefused(f"--out {target}: a profile is a plain TOML file; give a file path")
    if _same_file(target, source):
        raise ApplyRefused(f"--out {target}: refusing to write over the suggestion itself")
    if any(_same_file(target, builtin) for builtin in _builtin_profile_files()):
        raise ApplyRefused(f"--out {target}: refusing to write over a built-in profile")
    if extended is not None and _same_file(target, extended):
        raise ApplyRefused(f"--out {target}: refusing to write over the profile the suggestion extends")
    if target.is_dir():
        raise ApplyRefused(f"--out {target}: is a folder; give a file path")
    if target.exists() and not force:
        raise ApplyRefused(f"--out {target}: the file exists (pass --force to replace it)")


def _profile_doc(suggestion: Config, source: Path, target: Path, extended: Path | None) -> dict[str, Any]:
    """`extends` as the suggestion's, seen from the profile's folder, and the seven learned
    parameters. A parameter the suggestion sets apart from what it extends is kept too
    (none, when the gate compared it with the profile it extends)."""
    if extended is None:
        doc: dict[str, Any] = {"extends": suggestion.extends or "base"}
    else:
        doc = {"extends": os.path.relpath(extended, os.path.abspath(target.parent))}
    doc.update(suggestion.learned())
    parent = suggestion_baseline(suggestion, str(source)).to_dict()
    doc.update({name: value for name, value in suggestion.to_dict().items()
                if name not in LEARNED_BOUNDS and value != parent[name]})
    return doc
