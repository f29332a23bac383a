"""The audit log of `apply` (JSONL, one line per event) and the locks `apply` holds.

Each approval appends an `apply` line (who, when, the suggestion and its digest, the
profile and its digest, a random `entry` id) before the profile is renamed into place.
When the profile then fails to appear, an `apply_failed` line names that entry: its
profile was never written. A profile is *audited* when its log holds an `apply` line with
the SHA-256 of its bytes, not marked failed. Lines are appended and fsynced under an
exclusive lock on the log, so concurrent runs never interleave.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io.files import open_regular

AUDIT_LOG_NAME = "ami-engine-audit.jsonl"


class AuditLogError(InputError):
    """The audit log cannot take a line (exit code 2): nothing is written."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_writable(log: Path, label: str | None = None) -> None:
    """Refuse, before anything is written, a log that cannot take a line: a link to
    nothing, a folder, a file or folder without write permission. `label` names the log
    in messages (default: `audit log PATH`)."""
    label = label or f"audit log {log}"
    if log.is_symlink() and not log.exists():
        raise AuditLogError(f"{label}: is a link to {os.readlink(log)}, which does not exist; "
                            "refusing to write through it")
    if log.is_dir():
        raise AuditLogError(f"{label}: is a folder; give a file path")
    if log.exists():
        if not log.is_file():
            raise AuditLogError(f"{label}: is not a regular file")
        if not os.access(log, os.W_OK):
            raise AuditLogError(f"{label}: is not writable")
        return
    folder = log.parent.absolute()
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise AuditLogError(f"{label}: cannot be created ({folder} is not a writable folder)")


def fsync_folder(folder: Path) -> None:
    """Make a rename inside `folder` durable (where the platform allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on a folder (flock on the folder itself, so no lock file is left
    behind); a second holder waits until the first lets go."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def append_line(log: Path, entry: dict[str, Any]) -> None:
    """Append one JSON line to the log under an exclusive lock, and fsync it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    created = not log.exists()
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        data = (json.dumps(entry) + "\n").encode()
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(f"{log}: short write ({written} of {len(data)} bytes)")
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_folder(log.parent)


def read_entries(log: Path) -> list[dict[str, Any]]:
    """The log's lines that are JSON objects (other lines are no record of anything)."""
    try:
        with open_regular(log) as fh:  # a log named by a profile may be a FIFO or a device
            text = fh.read().decode("utf-8", errors="replace")
    except (OSError, InputError):
        return []
    entries = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def profile_audit_log(profile: Path, meta: dict[str, Any]) -> Path:
    """The log a profile names in its [meta] (relative to its folder), else the default
    log beside it."""
    named = meta.get("audit_log")
    if isinstance(named, str) and named:
        return profile.parent / named
    return profile.parent / AUDIT_LOG_NAME


def audit_record(profile: str | Path) -> tuple[dict[str, Any], Path] | None:
    """The `apply` line of the log that records exactly these profile bytes (and is not
    marked failed), with the log; None when there is none."""
    path = Path(profile)
    try:
        with open_regular(path) as fh:
            data = fh.read()
        meta = tomllib.loads(data.decode("utf-8")).get("meta")
    except (OSError, InputError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("config_id"), str):
        return None
    log = profile_audit_log(path, meta)
    digest = sha256_bytes(data)
    entries = read_entries(log)
    failed = {e.get("failed_entry") for e in entries if e.get("event") == "apply_failed"}
    for entry in entries:
        if entry.get("event") == "apply" and entry.get("profile_sha256") == digest \
                and entry.get("config_id") == meta["config_id"] and entry.get("entry") not in failed:
            return entry, log
    return None
