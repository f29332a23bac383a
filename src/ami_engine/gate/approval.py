"""From an accepted suggestion to a profile: gate again, a named approver, an audit line.

Nothing reaches a profile file without an accepting gate run at the moment of writing and
a person's name. The profile is written atomically; the audit log (JSONL) gets one line
per profile written. A refusal writes nothing at all.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from ..config import LEARNED_PARAMS, PROFILE_NAMES, load_config
from ..io.files import atomic_output
from ..io.tomlfile import dumps_toml
from .constraints import CriticalFloor
from .gate import GateReport, gate_suggestion_file

AUDIT_LOG_NAME = "ami-engine-audit.jsonl"


class ApplyRefused(Exception):
    """The suggestion is not written (exit code 1)."""


@dataclass(frozen=True)
class ApplyResult:
    profile_path: str
    audit_log: str
    gate: GateReport
    config_id: str


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _builtin_profile_paths() -> set[Path]:
    folder = resources.files("ami_engine.config").joinpath("profiles")
    return {Path(str(folder.joinpath(f"{name}.toml"))).resolve() for name in PROFILE_NAMES}


def apply_suggestion(suggestion_path: str, *, approved_by: str, out: str, force: bool = False,
                     audit_log: str | None = None, baseline: str | None = None, regression: str | None = None,
                     critical: CriticalFloor | None = None) -> ApplyResult:
    """Write the suggestion as a profile at `out` if the gate accepts it again."""
    approver = (approved_by or "").strip()
    if not approver:
        raise ApplyRefused("--approved-by: a person's name is required to apply a suggestion")
    source, target = Path(suggestion_path), Path(out)
    if target.resolve() == source.resolve():
        raise ApplyRefused(f"--out {out}: refusing to write over the suggestion itself")
    if target.resolve() in _builtin_profile_paths():
        raise ApplyRefused(f"--out {out}: refusing to write over a built-in profile")
    if target.exists() and not force:
        raise ApplyRefused(f"--out {out}: file exists (pass --force to replace it)")
    suggestion = load_config(suggestion_path)
    report = gate_suggestion_file(suggestion_path, baseline=baseline, regression=regression, critical=critical)
    if not report.accepted:
        raise ApplyRefused(f"the gate REJECTs {suggestion_path} (failed: {', '.join(report.failed)})")

    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    suggestion_sha = _sha256(source)
    doc = {"extends": suggestion.extends or "base"}
    doc.update({name: suggestion[name] for name in LEARNED_PARAMS})
    doc["meta"] = {
        "approved_by": approver,
        "approved_at": now,
        "suggestion": str(source),
        "suggestion_sha256": suggestion_sha,
        "config_id": suggestion.config_id,
        "gate": report.to_meta(),
    }
    text = dumps_toml(doc).encode()
    log = Path(audit_log) if audit_log else target.parent / AUDIT_LOG_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(str(target)) as fh:
        fh.write(text)
    written = load_config(str(target))
    if written.config_id != suggestion.config_id:  # never leave a profile that says something else
        target.unlink()
        raise ApplyRefused(f"{out}: written profile has config_id {written.config_id}, "
                           f"the suggestion {suggestion.config_id}; nothing applied")
    entry = {
        "when": now,
        "who": approver,
        "suggestion": str(source),
        "suggestion_sha256": suggestion_sha,
        "profile": str(target),
        "profile_sha256": _sha256(target),
        "config_id": suggestion.config_id,
        "verdict": report.verdict,
        "checks": {c.name: c.figure for c in report.checks},
    }
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")
    return ApplyResult(str(target), str(log), report, suggestion.config_id)
