"""Suggestion files (docs/formats.md, suggestion files): the one module that writes and reads them.

A suggestion is a config file: `extends` names the baseline, the seven learned parameters
are set at top level, and `[meta]` records how it was learned. Every file it names is
stored relative to the suggestion's own folder, with its SHA-256:

    extends = "../cfgs/mine.toml"        the baseline config file (or a built-in's name)
    [meta.baseline_file]                 path and sha256 of that file
    [meta.data]                          source, path and sha256 of the data learned from
    [meta.regression]                    path and sha256 of the regression suite, if any

so `gate`, `apply` and `report` work from any working directory. A reviewer may point at
a moved copy of the data (`--data PATH`); it is accepted only when its digest matches.

A suggestion is read once: its bytes are kept, and the config, the digest and everything
else come from those bytes (`apply` writes a profile from exactly what it gated).
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import PROFILE_NAMES, Config, ConfigError, load_config, parse_config, profile_text
from .config.loader import _relative_to, config_file, is_profile_name, one_read_per_file
from .io.files import InputError, atomic_output
from .io.tomlfile import dumps_toml, parse_toml, read_toml_bytes

if TYPE_CHECKING:
    from .io.stateset import StateSet
    from .learning.data import LearnData




class SuggestionError(ConfigError):
    """A suggestion, or a file it names, cannot be used as it stands (exit code 2)."""


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, or of a folder of Parquet files (see io.parquet.dataset_sha256)."""
    from .io.parquet import dataset_sha256

    return dataset_sha256(path)


def _digest_of(path: str | Path, label: str, digest: Callable[[], str] | None = None) -> str:
    """file_sha256 of `path` (or what `digest` gives); what keeps it from being read (a
    FIFO, a device) is named after `label`, which says where the path came from."""
    try:
        return digest() if digest is not None else file_sha256(path)
    except InputError as exc:
        own = exc.source == str(path) and exc.line is None and exc.problem is not None
        raise SuggestionError(f"{label}: {exc.problem if own else exc}") from None


def _same_file(label: str, actual: str, expected: str) -> None:
    if actual != expected:
        raise SuggestionError(f"{label}: SHA-256 {actual} does not match the {expected} the suggestion names; "
                              "it is not the file the suggestion was learned with")


# ---------------------------------------------------------------------------- writing


def _relative(path: str, folder: Path) -> str:
    return os.path.relpath(os.path.abspath(path), folder)


def suggestion_document(doc: Mapping[str, Any], out: str | Path, *, regression: str | Path | None = None
                        ) -> dict[str, Any]:
    """The suggestion `learn` built (file paths as given, i.e. relative to the working
    directory) with every file it names made relative to the folder of `out`, and the
    digest of each. The regression suite, when one was used, is named too."""
    folder = Path(os.path.abspath(out)).parent
    doc = copy.deepcopy(dict(doc))
    meta = dict(doc.get("meta") or {})
    extends = doc.get("extends")
    if isinstance(extends, str) and extends not in PROFILE_NAMES:
        meta["baseline_file"] = {"path": _relative(extends, folder), "sha256": file_sha256(extends)}
        doc["extends"] = meta["baseline_file"]["path"]
    data = meta.get("data")
    if isinstance(data, Mapping) and isinstance(data.get("path"), str):
        meta["data"] = {**data, "path": _relative(data["path"], folder)}
    if regression is not None:
        meta["regression"] = {"path": _relative(str(regression), folder), "sha256": file_sha256(regression)}
    doc["meta"] = meta
    return doc


def write_suggestion(doc: Mapping[str, Any], out: str | Path, *, regression: str | Path | None = None) -> bytes:
    """Write the suggestion atomically at `out` (see suggestion_document); its bytes."""
    text = dumps_toml(suggestion_document(doc, out, regression=regression)).encode()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out) as fh:
        fh.write(text)
    return text


# ---------------------------------------------------------------------------- reading


def _parse_toml(raw: bytes, where: str) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise SuggestionError(f"{where}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x})") from None
    try:
        return parse_toml(text, where)
    except InputError as exc:
        raise SuggestionError(str(exc)) from None


def read_document(path: str | Path) -> tuple[bytes, dict[str, Any]]:
    """The bytes of a suggestion file (`.gz` decompressed) and its TOML table, from one read."""
    where = str(path)
    if where == "-":
        raise SuggestionError("-: a suggestion is read from a file (the files it names are relative to it)")
    try:
        raw = read_toml_bytes(where)
    except InputError as exc:
        raise SuggestionError(str(exc)) from None
    return raw, _parse_toml(raw, where)


def _check_baseline_file(table: Mapping[str, Any], where: str) -> None:
    """The file a suggestion extends is the one it was learned from (same SHA-256)."""
    meta = table.get("meta")
    recorded = meta.get("baseline_file") if isinstance(meta, Mapping) else None
    extends = table.get("extends")
    if recorded is None or not isinstance(extends, str) or extends in PROFILE_NAMES or is_profile_name(extends):
        return
    if not isinstance(recorded, Mapping):
        raise SuggestionError(f"{where}: [meta.baseline_file]: expected a table")
    path = Path(_relative_to(extends, where))
    expected = recorded.get("sha256")
    if not path.exists():
        raise SuggestionError(f"{where}: extends {extends!r}: no such file {path}")
    if path.is_dir():  # file_sha256 would take it for a Parquet data set
        raise SuggestionError(f"{where}: extends {extends!r}: {path} is a folder, not a regular file")
    # Hashed from the bytes the config is parsed from (one_read_per_file).
    actual = _digest_of(path, f"{where}: extends {extends!r}: {path}", lambda: config_file(path).sha256)
    if actual != expected:
        raise SuggestionError(f"{where}: extends {extends!r}: {path} has SHA-256 {actual}, the suggestion was "
                              f"learned from {expected}; the baseline changed since")


@dataclass(frozen=True)
class Suggestion:
    """A suggestion as read: its bytes, its TOML table and its config, all from one read.

    `path` is None for a built-in profile gated by name (it names no files).
    """

    path: Path | None
    raw: bytes
    doc: Mapping[str, Any]
    config: Config
    parent: Config | None = None  # the config it extends, loaded with it (see baseline)

    @classmethod
    def read(cls, path: str | Path) -> Suggestion:
        """Read a suggestion (or any config) file once; a built-in profile's name is taken
        as that profile."""
        name = str(path)
        if name in PROFILE_NAMES and not Path(name).is_file():
            raw = profile_text(name).encode()
            config = load_config(name)
            return cls(None, raw, _parse_toml(raw, f"profile {name}"), config,
                       None if config.extends is None else load_config(config.extends))
        raw, doc = read_document(path)
        return cls.from_bytes(raw, path, doc)

    @classmethod
    def from_bytes(cls, raw: bytes, path: str | Path, doc: Mapping[str, Any] | None = None) -> Suggestion:
        """The suggestion whose bytes are `raw`, as if read from `path` (which places the
        files it names)."""
        where = str(path)
        table = dict(doc) if doc is not None else _parse_toml(raw, where)
        # The file it extends is checked and parsed from one read of it (one_read_per_file).
        with one_read_per_file():
            _check_baseline_file(table, where)  # before the config is built from it
            config = parse_config(table, where)
            return cls(Path(where), raw, table, config, load_config(_relative_to(config.extends or "base", where)))

    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else f"profile {self.config.source}"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()

    @property
    def meta(self) -> Mapping[str, Any]:
        return self.config.meta

    @property
    def folder(self) -> Path:
        return self.path.parent if self.path is not None else Path(".")

    def resolve(self, stored: str) -> Path:
        """A path stored in the suggestion, relative to its folder."""
        return Path(stored) if Path(stored).is_absolute() else self.folder / stored

    def _table(self, key: str) -> Mapping[str, Any] | None:
        value = self.meta.get(key)
        if value is not None and not isinstance(value, Mapping):
            raise SuggestionError(f"{self.name}: [meta.{key}]: expected a table")
        return value

    def baseline(self) -> Config:
        """The config the suggestion extends (a relative path read from its folder), as it
        was when the suggestion was read: the file whose SHA-256 was checked then."""
        if self.parent is not None:
            return self.parent
        return load_config(_relative_to(self.config.extends or "base", self.name))

    # ---------------------------------------------------------------------- named files

    def _named_file(self, key: str, table: Mapping[str, Any], override: str | Path | None, option: str) -> Path:
        """The file a [meta] table names, or the override, checked against its SHA-256. Its
        reader checks again that what it parsed has that SHA-256 (the file may be replaced
        in between)."""
        expected = table.get("sha256")
        if not isinstance(expected, str):
            raise SuggestionError(f"{self.name}: [meta.{key}] sha256: missing or not a string")
        if override is not None:
            path, label = Path(override), f"{option} {override}"
            if not path.exists():
                raise SuggestionError(f"{label}: no such file")
        else:
            stored = table.get("path")
            if not isinstance(stored, str) or not stored:
                raise SuggestionError(f"{self.name}: [meta.{key}] path: missing or not a string")
            path, label = self.resolve(stored), f"{self.name}: [meta.{key}] path {stored!r}"
            if not path.exists():
                raise SuggestionError(f"{label}: {path} is not readable here (paths are relative to the "
                                      f"suggestion's folder); pass {option} PATH to point at a copy")
        # What is not a regular file (a FIFO, a device) is refused by name as it is hashed.
        _same_file(label, _digest_of(path, label), expected)
        return path

    def data(self, override: str | Path | None = None) -> LearnData | None:
        """The data the suggestion was learned on, or None when it names none. `override`
        points at a copy of its data file (accepted only with the same SHA-256)."""
        from .learning.data import data_from_scenario, data_from_states_file, data_from_traces_file, meta_field
        from .learning.settings import LearnError

        table = self._table("data")
        if table is None:
            if override is not None:
                raise SuggestionError(f"--data {override}: {self.name} names no data")
            return None
        source = table.get("source")
        try:
            if source == "scenario":
                if override is not None:
                    raise SuggestionError(f"--data {override}: {self.name} was learned on a scenario, not a file")
                sc = meta_field(table, "scenario", dict, "data")
                name = meta_field(sc, "name", str, "data.scenario")
                n, seed, streams = (meta_field(sc, key, int, "data.scenario") for key in ("n", "seed", "streams"))
                if n != table.get("n_records", n):
                    raise SuggestionError(f"{self.name}: meta.data.scenario.n: {n} is not the number of records "
                                          f"learned on (n_records {table.get('n_records')!r})")
                data = data_from_scenario(name, n, seed, streams)  # refuses a size that cannot fit in memory
            elif source in ("states", "traces"):
                path = self._named_file("data", table, override, "--data")
                drop_unknown = table.get("drop_unknown", False)
                if not isinstance(drop_unknown, bool):
                    raise SuggestionError(f"{self.name}: [meta.data] drop_unknown: expected true or false, got "
                                          f"{drop_unknown!r}")
                data = (data_from_states_file(str(path), drop_unknown=drop_unknown) if source == "states"
                        else data_from_traces_file(str(path)))
            else:
                raise SuggestionError(f"{self.name}: [meta.data] source: unknown source {source!r}")
        except KeyError as exc:
            raise SuggestionError(f"{self.name}: [meta.data.scenario]: missing key {exc}") from None
        except LearnError as exc:
            raise SuggestionError(f"{self.name}: {exc}") from None
        except (TypeError, ValueError) as exc:
            if isinstance(exc, SuggestionError):
                raise
            raise SuggestionError(f"{self.name}: [meta.data]: {exc}") from None
        if data.sha256 != table.get("sha256"):
            raise SuggestionError(f"{self.name}: [meta.data]: {data.description} has SHA-256 {data.sha256}, the "
                                  f"suggestion names {table.get('sha256')}; it is not the data it was learned on")
        return data

    def held_out(self, override: str | Path | None = None) -> StateSet | None:
        """The held-out states the suggestion was gated on, rebuilt from [meta.data] and
        [meta.split]; None when it names no data."""
        from .learning.split import split_states

        data_meta, split_meta = self.meta.get("data"), self.meta.get("split")
        if data_meta is None and split_meta is None:
            if override is not None:
                raise SuggestionError(f"--data {override}: {self.name} names no data")
            return None
        if not isinstance(data_meta, Mapping) or not isinstance(split_meta, Mapping):
            missing = "[meta.split]" if isinstance(data_meta, Mapping) else "[meta.data]"
            raise SuggestionError(f"{self.name}: {missing}: missing or not a table; the held-out data cannot be "
                                  "rebuilt")
        data = self.data(override)
        assert data is not None
        seed, fraction = split_meta.get("seed"), split_meta.get("train_fraction")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise SuggestionError(f"{self.name}: [meta.split] seed: expected an integer >= 0, got {seed!r}")
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
            raise SuggestionError(f"{self.name}: [meta.split] train_fraction: expected a number in (0, 1), "
                                  f"got {fraction!r}")
        try:
            split = split_states(data.states, seed, float(fraction))
        except (ValueError, OverflowError) as exc:
            raise SuggestionError(f"{self.name}: [meta.split]: {exc}") from None
        # Both recorded by learn, both required: the held-out part rebuilt must be the one it
        # was gated on, not one a hand-edited file gets by leaving them out.
        recorded, method = split_meta.get("n_heldout"), split_meta.get("method")
        if recorded != split.held_out.size or method != split.method:
            raise SuggestionError(f"{self.name}: [meta.split]: n_heldout {recorded!r} and method {method!r}; the "
                                  f"rebuilt split holds out {split.held_out.size} {split.method}; it is not the "
                                  "split the suggestion was learned with")
        return data.states.subset(split.held_out)

    def regression(self) -> StateSet | None:
        """The regression suite the suggestion was learned with, or None."""
        from .io.files import read_once
        from .io.parquet import DatasetDigest, is_parquet
        from .io.states import read_states

        table = self._table("regression")
        if table is None:
            return None
        path = self._named_file("regression", table, None, "--regression")
        # What is parsed is what is hashed: a file put in its place after the check is not read.
        if is_parquet(path):
            digest = DatasetDigest(path)
            suite = read_states(str(path), allow_expect_level=True, digest=digest)
            actual = digest.hexdigest()
        else:
            loaded = read_once(path)
            suite, actual = read_states(loaded, allow_expect_level=True), loaded.sha256
        _same_file(f"{self.name}: [meta.regression] path {table.get('path')!r}", actual, table["sha256"])
        return suite


def read_suggestion(path: str | Path) -> Suggestion:
    return Suggestion.read(path)


def read_suggestion_document(path: str | Path, *, data: str | Path | None = None) -> dict[str, Any]:
    """A suggestion's TOML table for a report, from one read (its config is not needed:
    a report shows what the file records). With `data`, the copy of its data file is
    checked against the SHA-256 the suggestion names, and shown as its data file."""
    raw, doc = read_document(path)
    if data is None:
        return doc
    meta = doc.get("meta")
    table = meta.get("data") if isinstance(meta, Mapping) else None
    if not isinstance(table, Mapping) or table.get("source") not in ("states", "traces"):
        raise SuggestionError(f"--data {data}: {path} names no data file")
    expected = table.get("sha256")
    if not Path(data).exists():
        raise SuggestionError(f"--data {data}: no such file")
    actual = _digest_of(data, f"--data {data}")
    if actual != expected:
        raise SuggestionError(f"--data {data}: SHA-256 {actual} does not match the {expected} the suggestion names; "
                              "it is not the file the suggestion was learned with")
    return {**doc, "meta": {**meta, "data": {**table, "path": str(data)}}}
