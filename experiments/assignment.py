"""Deterministic arm assignment: a hash of (salt, user id) picks the arm by traffic split.

The same salt and user id give the same arm in every process and on every machine (SHA-256,
not Python's per-process ``hash``); a new salt re-randomises every user independently of the
old split. The service calls::

    assigner = Assigner(salt, arm_names, weights)   # once per experiment
    arm = assigner.assign(user_id)                   # per request

Imports only the standard library and NumPy, so the service can import it cheaply.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
from typing import Iterable, Sequence

import numpy as np

_UNIT_BITS = 64  # the first 8 bytes of the digest become a uniform number in [0, 1)


def unit_hash(salt: str, user_id: str) -> float:
    """A uniform number in [0, 1) from SHA-256 of ``"{salt}:{user_id}"``."""
    digest = hashlib.sha256(f"{salt}:{user_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** _UNIT_BITS


def unit_hashes(salt: str, user_ids: Iterable[str]) -> np.ndarray:
    """(n,) float in [0, 1): :func:`unit_hash` of each user id."""
    return np.fromiter((unit_hash(salt, str(user_id)) for user_id in user_ids), dtype=np.float64)


class Assigner:
    """Maps user ids to arms for one experiment.

    Args:
      salt: the experiment's salt.
      arm_names: arm names, in a fixed order (the config's order).
      weights: traffic share of each arm, positive, summing to 1.

    Raises:
      ValueError: mismatched lengths, a non-positive weight or weights not summing to 1.
    """

    def __init__(self, salt: str, arm_names: Sequence[str], weights: Sequence[float]) -> None:
        if len(arm_names) != len(weights) or len(arm_names) < 1:
            raise ValueError(f"need one weight per arm, got arms {list(arm_names)} and weights"
                             f" {list(weights)}")
        if any(weight <= 0 for weight in weights) or abs(sum(weights) - 1.0) > 1e-6:
            raise ValueError(f"weights must be positive and sum to 1, got {list(weights)}")
        self.salt = salt
        self.arm_names = tuple(arm_names)
        self.weights = tuple(float(weight) for weight in weights)
        cumulative = list(itertools.accumulate(self.weights))
        cumulative[-1] = 1.0  # rounding must not leave a gap at the top
        self._upper_bounds = cumulative[:-1]

    @classmethod
    def from_config(cls, config: "object") -> "Assigner":
        """From an :class:`experiments.config.ExperimentConfig` (salt, arm_names, weights)."""
        return cls(config.salt, config.arm_names, config.weights)  # type: ignore[attr-defined]

    def arm_index(self, user_id: str) -> int:
        """Index of the user's arm in ``arm_names``."""
        return bisect.bisect_right(self._upper_bounds, unit_hash(self.salt, str(user_id)))

    def assign(self, user_id: str) -> str:
        """The user's arm name; always the same for the same salt and user id."""
        return self.arm_names[self.arm_index(user_id)]

    def arm_indices(self, user_ids: Iterable[str]) -> np.ndarray:
        """(n,) int arm index of each user id (vectorised over the split, not the hash)."""
        return np.searchsorted(np.asarray(self._upper_bounds), unit_hashes(self.salt, user_ids),
                               side="right")
