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
  log while a line is appended, so a concurrent `apply` to the same new file is refused;
- files of their own: the profile and the log are none of the files `apply` reads (the
  suggestion, what it extends, its data and regression suite), by path or by identity (a
  hard link is the same file), nor each other; the log is checked again just before its
  line is appended, so a link made while the gate runs is refused too.

A refusal writes nothing at all: no profile, no audit line.
"""

from __future__ import annotations

import os
import secrets
import tomllib
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from .. import __version__
from ..config import PROFILE_NAMES, Config, find_profile, is_profile_name, parse_config, profile_search_path
from ..config.loader import one_read_per_file
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
    ApplyUsageError for a usage error and ApplyRefused when the gate rejects it. Every
    config file the suggestion and the gate depend on is read once (one_read_per_file)."""
    with one_read_per_file():
        return _apply(suggestion_path, approved_by=approved_by, out=out, force=force, audit_log=audit_log,
                      baseline=baseline, regression=regression, thresholds=thresholds, data=data)


def _apply(suggestion_path: str | Path, *, approved_by: str, out: str | Path, force: bool,
           audit_log: str | Path | None, baseline: str | Config | None, regression: str | StateSet | None,
           thresholds: GateThresholds | None, data: str | Path | None) -> ApplyResult:
    approver = _approver(approved_by)
    source, target = Path(suggestion_path), Path(out)
    log = Path(audit_log) if audit_log is not None else target.parent / AUDIT_LOG_NAME
    log_label = f"audit log {log}" if audit_log is None else f"--audit-log {log}"
    if str(source) in PROFILE_NAMES and not source.is_file():
        raise ApplyUsageError(f"{source}: a built-in profile is not a suggestion; give a suggestion file")
    suggestion = Suggestion.read(source)  # the one read: everything below comes from these bytes
    if not suggestion.doc:  # an empty file would otherwise become a copy of `base`
        raise SuggestionError(f"{source}: is empty (no parameters, no [meta]): nothing to apply")
    guarded = _guarded_files(source, suggestion, baseline, regression, data)
    _refuse_bad_target(target, guarded, force)

    def refuse_shared_log() -> None:
        for path, what in [*guarded, (target, "the profile (--out)")]:
            if _same_file(log, path):
                raise ApplyUsageError(f"{log_label}: is {what}; the audit log must be a file of its own")

    refuse_shared_log()
    try:
        check_writable(log, log_label)
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
    # Checked again where the line is appended: a link made while the gate ran is refused too.
    _write_audited(target, text, log, entry, force, refuse_shared_log)
    return ApplyResult(str(target), str(log), config.config_id, report, entry)


def _write_audited(target: Path, text: bytes, log: Path, entry: dict[str, Any], force: bool,
                   refuse_shared_log: Callable[[], None]) -> None:
    """Under the lock of the output's folder: check the target and the log again, write the
    profile to a temporary file, append the audit line, then rename the profile into place.
    A failure after the audit line appends an `apply_failed` line; no profile is left."""
    folder = Path(os.path.abspath(target)).parent
    folder.mkdir(parents=True, exist_ok=True)
    with folder_lock(folder):
        if os.path.lexists(target) and not force:
            raise ApplyUsageError(f"--out {target}: the file exists (pass --force to replace it)")
        refuse_shared_log()
        temp = temp_path_for(Path(os.path.abspath(target)))
        audited = False
        try:
            with open(temp, "xb") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                append_line(log, entry)
            except AuditLogError as exc:
                raise AuditLogError(f"{exc}; nothing applied") from None
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
    except (OSError, AuditLogError):
        pass


def _approver(name: str | None) -> str:
    """The approver's name as the profile and the log record it: visible text on one line.
    A line break, a control or an invisible character (Unicode category C*, or a line or
    paragraph separator) would let one name pass for another or hide who approved, so the
    name is refused, not cleaned up."""
    approver = (name or "").strip()
    if not approver:
        raise ApplyUsageError("--approved-by: the name of the person approving the suggestion is required")
    hidden = [c for c in approver if unicodedata.category(c)[0] == "C" or unicodedata.category(c) in ("Zl", "Zp")]
    if hidden:
        raise ApplyUsageError(f"--approved-by: the name holds a control or invisible character "
                              f"(U+{ord(hidden[0]):04X}); give the approver's name as plain text on one line")
    if not any(unicodedata.category(c)[0] in "LNPS" for c in approver):
        raise ApplyUsageError("--approved-by: the name has no visible character; give the approver's name")
    return approver


def _same_file(a: Path, b: Path) -> bool:
    """The same path once resolved, or the same file reached another way (a hard link):
    the same device and inode, where both exist."""
    try:
        if a.resolve() == b.resolve():
            return True
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def _guarded_files(source: Path, suggestion: Suggestion, baseline: str | Config | None,
                   regression: str | StateSet | None, data: str | Path | None) -> list[tuple[Path, str]]:
    """Every file the profile and the audit log must not be, with what it is: the
    suggestion, the built-in profiles, the files the suggestion (or `--baseline`) extends,
    and its data and regression suite (each file of a Parquet folder), as named in its
    [meta] or given instead."""
    files = [(source, "the suggestion itself")]
    files += [(path, "a built-in profile") for path in _builtin_profile_files()]
    files += [(path, "the profile the suggestion extends")
              for path in _files_extended(suggestion.config.extends, suggestion.name)]
    if isinstance(baseline, str):
        files += [(path, "the --baseline profile or one it extends") for path in _files_extended(baseline, ".")]
    for key, given, option in (("data", data, "--data"), ("regression", regression, "--regression")):
        table = suggestion.meta.get(key)
        stored = table.get("path") if isinstance(table, Mapping) else None
        if isinstance(stored, str) and stored:
            named = suggestion.resolve(stored)
            files += [(path, f"the suggestion's {key} ([meta.{key}])") for path in _files_in(named)]
        if isinstance(given, (str, Path)):
            files += [(path, f"the {option} file") for path in _files_in(Path(given))]
    return files


def _files_in(path: Path) -> list[Path]:
    """A file; a folder (a Parquet data set) and every file under it."""
    if not path.is_dir():
        return [path]
    return [path, *(Path(root, name) for root, _, names in os.walk(path) for name in names)]


def _builtin_profile_files() -> list[Path]:
    folder = resources.files("ami_engine.config").joinpath("profiles")
    return [Path(str(folder.joinpath(f"{name}.toml"))) for name in PROFILE_NAMES]


def _files_extended(extends: str | None, where: str) -> list[Path]:
    """The files along an `extends` chain read in the file `where` (a relative path is read
    from the including file's folder, a bare name found on the profile search path); the
    built-in profiles end it."""
    from ..config.loader import _relative_to

    out: list[Path] = []
    while extends is not None and extends not in PROFILE_NAMES and len(out) < 64:
        path = find_profile(extends) if is_profile_name(extends) else Path(_relative_to(extends, where))
        if path is None:
            break
        out.append(path)
        try:
            doc = read_toml(path)
        except (OSError, InputError):
            break
        where, extends = str(path), doc.get("extends", "base")
        if not isinstance(extends, str):
            break
    return out


def _refuse_bad_target(target: Path, guarded: list[tuple[Path, str]], force: bool) -> None:
    if str(target) == "-" or target.name.endswith(".gz"):
        raise ApplyUsageError(f"--out {target}: a profile is a plain TOML file; give a file path")
    for path, what in guarded:
        if _same_file(target, path):
            raise ApplyUsageError(f"--out {target}: refusing to write over {what}")
    if target.is_dir():
        raise ApplyUsageError(f"--out {target}: is a folder; give a file path")
    if target.stem in PROFILE_NAMES and any(_same_file(target.parent, folder) for folder, _ in profile_search_path()):
        raise ApplyUsageError(f"--out {target}: a profile on the search path cannot take the built-in name "
                              f"{target.stem!r}")
    if os.path.lexists(target) and not force:
        raise ApplyUsageError(f"--out {target}: the file exists (pass --force to replace it)")
