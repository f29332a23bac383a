"""From an accepted suggestion to a profile: gate again, a named approver, an audit line.

Nothing reaches a profile file without an accepting gate run at the moment of writing and
a person's name (docs/gate.md: learning output is never applied automatically).
What `apply` promises:

- one read: the suggestion's bytes are read once; the gate, the digest and the profile
  all come from those bytes, so a file swapped in the meantime changes nothing;
- a self-contained profile: every effective parameter value is written out (no `extends`
  of a file that could change later), with its `config_id` and the approval (who, when,
  the suggestion's digest, the audit entry) in `[meta]`; loading it checks the id;
- audit first: the audit line is appended and fsynced before the profile is renamed into
  place; if the profile then fails to appear, an `apply_failed` line says so, and a
  failure at any point leaves no profile;
- locking: the output's folder is locked from the existence check to the rename, and the
  log while a line is appended, so a concurrent `apply` to the same new file is refused.

A refusal writes nothing at all: no profile, no audit line.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from .. import __version__
from ..config import PROFILE_NAMES, Config, parse_config, profile_search_path
from ..errors import GateRejected, InputError, UsageError
from ..io.files import temp_path_for
from ..io.stateset import StateSet
from ..io.tomlfile import dumps_toml, read_toml
from ..suggestion import Suggestion, SuggestionError
from .audit import (
    AUDIT_LOG_NAME,
    AuditLogError,
    append_line,
    check_writable,
    folder_lock,
    fsync_folder,
    sha256_bytes,
)
from .gate import GateThresholds
from .suggestions import gate_suggestion
from .verdict import GateReport

__all__ = ["AUDIT_LOG_NAME", "ApplyRefused", "ApplyResult", "ApplyUsageError", "apply_suggestion"]


class ApplyRefused(GateRejected):
    """The suggestion is not written, and nothing else is (exit code 1: the gate refused)."""


class ApplyUsageError(ApplyRefused, UsageError):
    """A usage error of `apply` (exit code 2): an option names what is wrong."""

    exit_code = UsageError.exit_code
    label = UsageError.label


@dataclass(frozen=True)
class ApplyResult:
    profile_path: str
    audit_log: str
    config_id: str
    gate: GateReport
    audit_entry: dict[str, Any]


def apply_suggestion(suggestion_path: str | Path, *, approved_by: str, out: str | Path, force: bool = False,
                     audit_log: str | Path | None = None, baseline: str | Config | None = None,
                     regression: str | StateSet | None = None, thresholds: GateThresholds | None = None,
                     data: str | Path | None = None) -> ApplyResult:
    """Write the suggestion as a self-contained profile at `out` if the gate accepts it
    again, after appending who approved it, when, and the digests of both files to the
    audit log (default: `ami-engine-audit.jsonl` next to the profile). Raises
    ApplyUsageError for a usage error and ApplyRefused when the gate rejects it."""
    approver = (approved_by or "").strip()
    if not approver:
        raise ApplyUsageError("--approved-by: the name of the person approving the suggestion is required")
    source, target = Path(suggestion_path), Path(out)
    log = Path(audit_log) if audit_log is not None else target.parent / AUDIT_LOG_NAME
    if str(source) in PROFILE_NAMES and not source.is_file():
        raise ApplyUsageError(f"{source}: a built-in profile is not a suggestion; give a suggestion file")
    suggestion = Suggestion.read(source)  # the one read: everything below comes from these bytes
    if not suggestion.doc:  # an empty file would otherwise become a copy of `base`
        raise SuggestionError(f"{source}: is empty (no parameters, no [meta]): nothing to apply")
    _refuse_bad_target(source, target, suggestion, force)
    if _same_file(log, target) or _same_file(log, source):
        raise ApplyUsageError(f"--audit-log {log}: must be a log file of its own, not the profile or the suggestion")
    try:
        check_writable(log, None if audit_log is None else f"--audit-log {log}")
    except AuditLogError as exc:
        raise ApplyUsageError(str(exc)) from None

    report = gate_suggestion(suggestion, baseline, regression, thresholds=thresholds, data=data)
    if not report.accepted:
        raise ApplyRefused(f"the gate REJECTs {source} (failed: {', '.join(report.failed)}); nothing applied")

    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    entry_id = secrets.token_hex(8)
    config = suggestion.config
    target_folder = Path(os.path.abspath(target)).parent
    doc: dict[str, Any] = config.to_dict()
    doc["meta"] = {
        "config_id": config.config_id,
        "approved_by": approver,
        "approved_at": now,
        "suggestion": str(source.resolve()),
        "suggestion_sha256": suggestion.sha256,
        "baseline_config_id": report.baseline_id,
        "audit_log": os.path.relpath(os.path.abspath(log), target_folder),
        "audit_entry": entry_id,
        "tool_version": __version__,
        "gate": report.to_meta(),
    }
    text = dumps_toml(doc).encode()
    written = parse_config(tomllib.loads(text.decode()), str(target))
    if written.config_id != config.config_id:  # never write a profile that says something else
        raise ApplyRefused(f"--out {target}: the profile would have config_id {written.config_id}, the suggestion "
                           f"{config.config_id}; nothing applied")
    entry = {
        "event": "apply",
        "entry": entry_id,
        "tool_version": __version__,
        "when": now,
        "who": approver,
        "suggestion": str(source.resolve()),
        "suggestion_sha256": suggestion.sha256,
        "profile": str(target.resolve()),
        "profile_sha256": sha256_bytes(text),
        "config_id": config.config_id,
        "baseline_config_id": report.baseline_id,
        "verdict": report.verdict,
        "checks": report.figures(),
    }
    _write_audited(target, text, log, entry, force)
    return ApplyResult(str(target), str(log), config.config_id, report, entry)


def _write_audited(target: Path, text: bytes, log: Path, entry: dict[str, Any], force: bool) -> None:
    """Under the lock of the output's folder: check the target again, write the profile to
    a temporary file, append the audit line, then rename the profile into place. A failure
    after the audit line appends an `apply_failed` line; no profile is left."""
    folder = Path(os.path.abspath(target)).parent
    folder.mkdir(parents=True, exist_ok=True)
    with folder_lock(folder):
        if os.path.lexists(target) and not force:
            raise ApplyUsageError(f"--out {target}: the file exists (pass --force to replace it)")
        temp = temp_path_for(Path(os.path.abspath(target)))
        audited = False
        try:
            with open(temp, "xb") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            append_line(log, entry)
            audited = True
            os.replace(temp, target)
            fsync_folder(folder)
        except BaseException as exc:
            temp.unlink(missing_ok=True)
            if audited:
                _mark_failed(log, entry, exc)
            raise


def _mark_failed(log: Path, entry: dict[str, Any], exc: BaseException) -> None:
    """Say in the log that the entry's profile never appeared (best effort: the original
    failure is what the caller hears about)."""
    failed = {"event": "apply_failed", "failed_entry": entry["entry"], "profile": entry["profile"],
              "profile_sha256": entry["profile_sha256"],
              "when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "reason": f"{type(exc).__name__}: {exc}"[:300]}
    try:
        append_line(log, failed)
    except OSError:
        pass


def _same_file(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def _builtin_profile_files() -> list[Path]:
    folder = resources.files("ami_engine.config").joinpath("profiles")
    return [Path(str(folder.joinpath(f"{name}.toml"))) for name in PROFILE_NAMES]


def _files_extended(suggestion: Suggestion) -> list[Path]:
    """The files along the suggestion's `extends` chain (a relative path read from the
    including file's folder)."""
    from ..config.loader import _relative_to, is_profile_name

    out: list[Path] = []
    where, extends = suggestion.name, suggestion.config.extends
    while extends is not None and not is_profile_name(extends) and len(out) < 64:
        path = Path(_relative_to(extends, where))
        out.append(path)
        try:
            data = read_toml(path)
        except (OSError, InputError):
            break
        where, extends = str(path), data.get("extends", "base")
        if not isinstance(extends, str):
            break
    return out


def _refuse_bad_target(source: Path, target: Path, suggestion: Suggestion, force: bool) -> None:
    if str(target) == "-" or target.name.endswith(".gz"):
        raise ApplyUsageError(f"--out {target}: a profile is a plain TOML file; give a file path")
    if _same_file(target, source):
        raise ApplyUsageError(f"--out {target}: refusing to write over the suggestion itself")
    if any(_same_file(target, builtin) for builtin in _builtin_profile_files()):
        raise ApplyUsageError(f"--out {target}: refusing to write over a built-in profile")
    if any(_same_file(target, extended) for extended in _files_extended(suggestion)):
        raise ApplyUsageError(f"--out {target}: refusing to write over the profile the suggestion extends")
    if target.is_dir():
        raise ApplyUsageError(f"--out {target}: is a folder; give a file path")
    if target.stem in PROFILE_NAMES and any(_same_file(target.parent, folder) for folder, _ in profile_search_path()):
        raise ApplyUsageError(f"--out {target}: a profile on the search path cannot take the built-in name "
                              f"{target.stem!r}")
    if os.path.lexists(target) and not force:
        raise ApplyUsageError(f"--out {target}: the file exists (pass --force to replace it)")

