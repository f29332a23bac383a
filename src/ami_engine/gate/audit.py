"""The audit log of `apply` (JSONL, one line per event) and the locks `apply` holds.

Each approval appends an `apply` line (who, when, the suggestion and its digest, the
profile and its digest, a random `entry` id) before the profile is renamed into place.
When the profile then fails to appear, an `apply_failed` line names that entry: its
profile was never written. A profile is *audited* when its log holds an `apply` line with
the SHA-256 of its bytes, not marked failed. Lines are appended and fsynced under an
exclusive lock on the log, so concurrent runs never interleave, and whole or not at all:
a write that fails part way is cut back, and a log whose last line is torn is refused.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..config.loader import config_file
from ..errors import InputError
from ..io.files import open_regular

AUDIT_LOG_NAME = "ami-engine-audit.jsonl"


class AuditLogError(InputError):
    """The audit log cannot take a line (exit code 2): nothing is written."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_writable(log: Path, label: str | None = None) -> None:
    """Refuse, before anything is written, a log that cannot take a line: a link to
    nothing, a folder, a file or folder without write permission, a log whose last line
    is torn (see append_line). `label` names the log in messages (default: `audit log
    PATH`)."""
    label = label or f"audit log {log}"
    if log.is_symlink() and not log.exists():
        raise AuditLogError(f"{label}: is a link to {os.readlink(log)}, which does not exist; "
                            "refusing to write through it")
    if log.is_dir():
        raise AuditLogError(f"{label}: is a folder; give a file path")
    if log.exists():
        if not log.is_file():
            raise AuditLogError(f"{label}: is not a regular file")
        if not os.access(log, os.R_OK | os.W_OK):
            raise AuditLogError(f"{label}: is not readable and writable")
        try:
            with open(log, "rb") as fh:
                torn = _ends_mid_line(fh.fileno())
        except OSError as exc:
            raise AuditLogError(f"{label}: cannot be read ({exc.strerror or exc})") from None
        if torn:
            raise AuditLogError(_torn(label))
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
    """Append one JSON line to the log under an exclusive lock, and fsync it: the whole
    line or nothing.

    A write that fails part way (a full disk, a file-size limit) is cut back to the log's
    old size, so no half line is left for the next line to be glued onto. A log whose
    last line is already torn (no newline at its end) is refused rather than appended to
    on a fresh line: since failed writes are cut back, a torn line is the mark of a crash
    during a write or of an edit, and a person should look at the log before approvals
    are recorded after it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    created = not log.exists()
    data = (json.dumps(entry) + "\n").encode()
    fd = os.open(log, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if _ends_mid_line(fd):
            raise AuditLogError(_torn(f"audit log {log}"))
        size = os.fstat(fd).st_size
        try:
            _write_all(fd, data)
            os.fsync(fd)
        except BaseException as exc:
            left = ("the log is left as it was" if _cut_back(fd, size)
                    else f"a partial line is left after byte {size}: remove it before the next apply")
            if isinstance(exc, OSError):
                reason = exc.strerror or str(exc)
                raise AuditLogError(f"audit log {log}: the line could not be appended "
                                    f"({reason[:1].lower()}{reason[1:]}); {left}") from None
            raise
    finally:
        os.close(fd)
    if created:
        fsync_folder(log.parent)


def _write_all(fd: int, data: bytes) -> None:
    """Write all of `data`; a short write goes on, so that its cause is raised as an error."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, "nothing written")
        view = view[written:]


def _cut_back(fd: int, size: int) -> bool:
    """Truncate the file back to `size`; whether that worked."""
    try:
        os.ftruncate(fd, size)
    except OSError:
        return False
    with contextlib.suppress(OSError):
        os.fsync(fd)
    return True


def _ends_mid_line(fd: int) -> bool:
    """Whether the file's last byte is not a newline (an empty file ends no line)."""
    size = os.fstat(fd).st_size
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"


def _torn(label: str) -> str:
    return (f"{label}: its last line is incomplete (no newline at the end): a write that failed part way, "
            "or an edit. Check the log, end it with a newline (or move it aside), then run apply again")


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
        data = config_file(path).raw  # the bytes its config is loaded from, in one_read_per_file
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
