"""A bounded local refinement of the search's best point: a seeded pattern search.

Each iteration tries the 2 x dim points center +/- step x q_j, where q_1..q_dim are the
columns of a random orthonormal basis drawn from (seed, iteration), in unit coordinates
(each bound's width is 1), clamped into the box. When the best of them beats the center,
it becomes the center and the step doubles (up to 0.5); otherwise the step halves. A fixed number of
iterations, so a fixed number of evaluations.

Like a strategy, the refinement keeps nothing between calls: the next batch is a function
of (seed, start, the batches evaluated so far), so a resumed run proposes exactly what an
uninterrupted one would have.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .policy_optimizer import SearchSpace

INITIAL_STEP = 0.5  # share of each bound's width
SHRINK = 0.5
GROW = 2.0  # the step after a move (at most 0.5)


def batch_size(space: SearchSpace) -> int:
    """Evaluations per refinement iteration."""
    return 2 * space.dim


def _basis(seed: int, iteration: int, dim: int) -> np.ndarray:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EF1, iteration]))
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    return q * np.where(np.diag(r) < 0, -1.0, 1.0)  # a unique basis for the draw


def state(start: np.ndarray, start_loss: float, done: Sequence[tuple[np.ndarray, np.ndarray]]
          ) -> tuple[np.ndarray, float, float]:
    """(center, its loss, step in unit coordinates) after the evaluated batches `done`."""
    center, best, step = np.asarray(start, dtype=float), float(start_loss), INITIAL_STEP
    for X, y in done:
        y = np.asarray(y, dtype=float)
        j = int(np.argmin(y))
        if np.isfinite(y[j]) and y[j] < best - 1e-12 * max(1.0, abs(best)):
            center, best = np.asarray(X[j], dtype=float), float(y[j])
            step = min(step * GROW, 0.5)
        else:
            step *= SHRINK
    return center, best, step


def propose(space: SearchSpace, seed: int, start: np.ndarray, start_loss: float,
            done: Sequence[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The next batch of the refinement (2 x dim rows, inside the bounds)."""
    center, _, step = state(start, start_loss, done)
    q = _basis(seed, len(done), space.dim)
    u = space.to_unit(center)
    moves = np.concatenate([q.T, -q.T]) * step
    return space.clamp(space.from_unit(np.clip(u[None, :] + moves, 0.0, 1.0)))
