"""What `ScoreTable.evaluate` returns: each config's counts and sums over all decisions,
and the figures (figures.py) read from them by name."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from ..figures import FAIL_SAFE_LEVEL, Figures
from . import _kernel as kernel


class EngineSums(Figures):
    """The engine's sums over all decisions, per config: one config (`sums[i]`) or several.

    Every figure is a float for one config and an array (one value per config) for
    several. `merge` adds the sums of the same configs over parts of the data."""

    def __init__(self, sums: np.ndarray) -> None:
        sums = np.asarray(sums, dtype=np.float64)
        if sums.ndim not in (1, 2) or sums.shape[-1] != kernel.N_SUMS:
            raise ValueError(f"engine sums: expected shape (configs, {kernel.N_SUMS}), got {sums.shape}")
        self._sums = sums

    @classmethod
    def empty(cls) -> EngineSums:
        """The sums of no config."""
        return cls(np.zeros((0, kernel.N_SUMS)))

    @classmethod
    def zeros(cls, n_configs: int) -> EngineSums:
        """The sums of `n_configs` configs over no decision (where a merge starts)."""
        return cls(np.zeros((n_configs, kernel.N_SUMS)))

    @classmethod
    def merge(cls, parts: Sequence[EngineSums]) -> EngineSums:
        """The sums of the same configs over several parts of the data, added in the order given
        (so that the same parts always give the same bits)."""
        if not parts:
            raise ValueError("engine sums: nothing to merge")
        total = parts[0]._sums.copy()
        for part in parts[1:]:
            if part._sums.shape != total.shape:
                raise ValueError(f"engine sums: cannot merge shape {part._sums.shape} into {total.shape}")
            total += part._sums
        return cls(total)

    @classmethod
    def concat(cls, parts: Iterable[EngineSums]) -> EngineSums:
        """Several configs' sums as one, in the order given."""
        rows = [np.atleast_2d(p._sums) for p in parts]
        return cls(np.concatenate(rows)) if rows else cls.empty()

    @property
    def one(self) -> bool:
        """True when these are the sums of one config (figures are floats)."""
        return self._sums.ndim == 1

    def __len__(self) -> int:
        if self.one:
            raise TypeError("the sums of one config have no length")
        return self._sums.shape[0]

    def __getitem__(self, index: Any) -> EngineSums:
        if self.one:
            raise TypeError("the sums of one config cannot be indexed")
        return EngineSums(self._sums[index])

    def __iter__(self) -> Iterator[EngineSums]:
        if self.one:
            raise TypeError("the sums of one config cannot be iterated")
        return (EngineSums(row) for row in self._sums)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EngineSums):
            return NotImplemented
        return self._sums.shape == other._sums.shape and bool(np.array_equal(self._sums, other._sums))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        what = "one config" if self.one else f"{len(self)} configs"
        return f"EngineSums({what})"

    def to_array(self) -> np.ndarray:
        """A copy of the raw sums (for storage and transport; read figures by name instead)."""
        return self._sums.copy()

    def _column(self, j: int) -> Any:
        return self._sums[..., j]

    def _per_record(self, total: Any) -> Any:
        return total / self._column(kernel.S_N)

    def _level_total(self, level: int) -> Any:
        return self._column(kernel.S_L0 + level)

    def _cus_total(self) -> Any:
        return self._column(kernel.S_CUS)

    def _distortion_total(self) -> Any:
        return self._column(kernel.S_DISTORTION)

    @property
    def n(self) -> Any:
        """Decisions (an int for one config, an integer array for several)."""
        n = self._column(kernel.S_N)
        return int(n) if self.one else n.astype(np.int64)

    @property
    def n_fail_safe(self) -> Any:
        """Decisions at level 2 (as floats, like the sums they come from)."""
        return self._level_total(FAIL_SAFE_LEVEL)

    @property
    def human_escalation_rate(self) -> Any:
        """The engine escalates to a human exactly its level-2 decisions."""
        return self.fail_safe_rate

    @property
    def soft_clamp_rate(self) -> Any:
        return self._per_record(self._column(kernel.S_CLAMPED))

    @property
    def sum_H(self) -> Any:
        """The sum of H over the final actions."""
        return self._column(kernel.S_H_FINAL)

    @property
    def mean_H(self) -> Any:
        """The mean H of the final actions."""
        return self._per_record(self.sum_H)

    @property
    def reason_counts(self) -> dict[str, Any]:
        """Decisions per reason code, by reason name."""
        return {name: self._column(kernel.S_REASON + r) for r, name in enumerate(kernel.REASONS)}

    def figures(self, weights: Any) -> dict[str, Any]:
        """One config's figures and L as plain data (the [meta.metrics] entries of a suggestion)."""
        if not self.one:
            raise TypeError("figures: take them of one config, sums[i]")
        level_rates = [float(r) for r in self.level_rates]
        return {
            "L": float(self.loss(weights)),
            "fail_safe_rate": float(self.fail_safe_rate),
            "mean_cus": float(self.mean_cus),
            "clamp_distortion": float(self.clamp_distortion),
            "level_rates": level_rates,
            "human_escalation_rate": float(self.human_escalation_rate),
            "n": self.n,
        }
