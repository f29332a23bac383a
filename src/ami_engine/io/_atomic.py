"""Outputs written atomically: a temporary file beside the target, renamed over it only
when everything was written, so that a failed run leaves no partial file behind.

`-` writes to stdout and a `.gz` target is gzip-compressed reproducibly. An output is
written to a hidden temporary file beside it, `.NAME.ami-tmp-PID-RANDOM`, and renamed over
it when complete. A process killed while writing leaves its temporary file behind; the
next output written to the same folder removes those whose process is gone, and the
temporary folders of parts (temp_folder_for) that hold nothing but their part files.
"""

from __future__ import annotations

import gzip
import os
import re
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from ..errors import InputError
from ._errors import os_input_error
from ._open import STDIO

_TEMP_MARK = ".ami-tmp-"


_PART_FILE = re.compile(r"part-\d{5,}\.parquet")  # the files of a temporary folder of parts


def file_target(path: str | os.PathLike[str]) -> Path:
    """`path` as a file to write. A name ending in a path separator (`out.parquet/`) names
    a folder: it is refused, not written as the file `Path` would make of it."""
    text = os.fspath(path)
    if text.endswith(tuple(sep for sep in (os.sep, os.altsep) if sep)):
        raise InputError(text, None, None, "ends in a path separator, which names a folder; give a file name "
                                           "to write")
    return Path(text)


def temp_path_for(target: Path) -> Path:
    """A new temporary file name beside `target`, after clearing stale ones from its folder."""
    remove_stale_temps(target.parent)
    return target.with_name(f".{target.name}{_TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")


def temp_folder_for(target: Path) -> Path:
    """A new temporary folder beside `target` (made here), for files named part_file(p)
    that are put together into `target`. A folder left by a process killed meanwhile is
    removed by a later remove_stale_temps there, when it holds nothing else."""
    folder = temp_path_for(target)
    folder.mkdir()
    return folder


def part_file(folder: Path, p: int) -> Path:
    """The name of part `p` in a temporary folder of parts."""
    return folder / f"part-{p:05d}.parquet"


def remove_stale_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files in `folder` left by processes no longer running."""
    removed = []
    try:
        entries = list(Path(folder).glob(f".*{_TEMP_MARK}*"))
    except OSError:
        return removed
    for entry in entries:
        if not _stale(entry.name):
            continue
        try:
            if entry.is_symlink():
                continue
            if entry.is_file():
                entry.unlink()
                removed.append(entry)
            elif entry.is_dir() and _remove_parts_folder(entry):
                removed.append(entry)
        except OSError:
            continue
    return removed


def _stale(name: str) -> bool:
    """Whether `name` is one of our temporary names whose process is no longer running."""
    pid_text = name.rsplit(_TEMP_MARK, 1)[1].split("-", 1)[0]
    return pid_text.isdigit() and not _process_alive(int(pid_text))


def _remove_parts_folder(folder: Path) -> bool:
    """Remove a temporary folder of parts (temp_folder_for) and the part files in it, only
    when it holds nothing but part files and stale temporary files of them; else leave it."""
    entries = list(folder.iterdir())
    for entry in entries:
        name = entry.name
        if entry.is_symlink() or not entry.is_file():
            return False
        if _PART_FILE.fullmatch(name):
            continue
        if not (name.startswith(".") and _TEMP_MARK in name and _PART_FILE.fullmatch(name[1:].rsplit(_TEMP_MARK, 1)[0])
                and _stale(name)):
            return False
    for entry in entries:
        entry.unlink()
    folder.rmdir()
    return True


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # someone else's process, or a number this system cannot ask about: leave it
    return True


@contextmanager
def _compressed_if_gz(raw: IO[bytes], name: str) -> Iterator[IO[bytes]]:
    """`raw`, gzip-compressed when `name` ends in `.gz` (no file name, mtime 0: same content, same bytes)."""
    if name.endswith(".gz"):
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as zipped:
            yield zipped  # type: ignore[misc]
    else:
        yield raw


def _open_temp(target: Path) -> tuple[Path, IO[bytes]]:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = temp_path_for(target)
        return temp, open(temp, "xb")  # noqa: SIM115 - closed by the caller
    except OSError as exc:
        raise os_input_error(exc, str(target)) from None


def _replace(temp: Path, target: Path) -> None:
    try:
        os.replace(temp, target)
    except OSError as exc:
        raise os_input_error(exc, str(target)) from None


def overwrites_input(output: str | os.PathLike[str] | None, inputs: dict[str, str | os.PathLike[str] | None]
                     ) -> str | None:
    """The option of the input that `output` would replace (the same path, the same file by
    another path or link, or a Parquet file inside an input folder of them), else None.
    stdin and stdout (`-`) are never the same file."""
    if output is None or str(output) == STDIO:
        return None
    target = Path(output).resolve()
    for option, given in inputs.items():
        if given is None or str(given) == STDIO:
            continue
        source = Path(given).resolve()
        # In an input folder, a Parquet file would become part of the data set read.
        if target == source or (source in target.parents and target.suffix.lower() == ".parquet"):
            return option
        try:
            if os.path.samefile(target, source):
                return option
        except OSError:  # either does not exist (yet): not the same file
            pass
    return None


@contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """A binary file that appears at `path` only if the `with` block completes.

    `-` writes to stdout. A path ending in `.gz` is gzip-compressed with no file name and
    mtime 0 in the header, so the same content gives the same bytes. A file that cannot
    be written is an InputError naming it.
    """
    if str(path) == STDIO:
        out = sys.stdout.buffer
        yield out
        out.flush()
        return
    target = file_target(path)
    temp, raw = _open_temp(target)
    try:
        with raw, _compressed_if_gz(raw, target.name) as stream:
            yield stream
        _replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_outputs(outputs: dict[str, bytes | None]) -> None:
    """Write several files as one set: all of them, or, on any failure, none.

    Each file is written in full to its temporary file first; only then is each path
    mapped to None removed (a file of an earlier run that this run does not produce) and
    each temporary file renamed into place. `-` is written to stdout last.
    """
    temps: list[tuple[Path, Path]] = []
    for path in outputs:
        if path != STDIO:
            file_target(path)
    try:
        for path, data in outputs.items():
            if data is None or path == STDIO:
                continue
            target = file_target(path)
            temp, raw = _open_temp(target)
            temps.append((temp, target))
            with raw, _compressed_if_gz(raw, target.name) as stream:
                stream.write(data)
        for path, data in outputs.items():
            if data is None and path != STDIO and os.path.isfile(path):
                try:
                    os.unlink(path)
                except OSError as exc:
                    raise os_input_error(exc, path) from None
        for temp, target in temps:
            _replace(temp, target)
    except BaseException:
        for temp, _ in temps:
            temp.unlink(missing_ok=True)
        raise
    for path, data in outputs.items():
        if path == STDIO and data is not None:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()


__all__ = ["atomic_output", "file_target", "part_file", "remove_stale_temps", "temp_folder_for", "temp_path_for",
           "write_outputs"]
