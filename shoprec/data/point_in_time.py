"""The two rules that decide train/serve skew, in one place: the behaviour sequence and the time split.

EventsExampleGen (Beam, offline), the service's offline signals and live requests (online) and the
benchmarks all call these functions, so a sequence built for training is the sequence served.

Behaviour sequence: a user's items, in the order of ``(timestamp, event_id)``, consecutive repeats
collapsed, the latest ``history_length`` kept, most recent last. The sequence *of an event* holds
only items of events strictly before its timestamp (no leakage from events at the same second).

Time split: events at or after the cutoff go to eval, the rest to train. The cutoff is the
``1 - eval_fraction`` point of :data:`QUANTILES` + 1 evenly spaced quantiles of all timestamps.
Beam computes those quantiles approximately at scale (``ApproximateQuantiles``); in memory they are
exact (:func:`exact_quantiles`), and the two agree on data small enough for Beam to be exact.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

QUANTILES = 1000  # resolution of the time cutoff: 0.1% of events


def extend_history(history: Sequence[str], items: Iterable[str], history_length: int) -> tuple[str, ...]:
    """Appends ``items`` (oldest first) to ``history``, collapsing consecutive repeats.

    Returns:
      At most ``history_length`` item ids, most recent last.
    """
    extended = collections.deque(history, maxlen=history_length)
    for item_id in items:
        if not extended or extended[-1] != item_id:
            extended.append(item_id)
    return tuple(extended)


def histories_before(events: Iterable[tuple[int, str]], history_length: int) -> Iterator[tuple[str, ...]]:
    """The behaviour sequence of each of one user's events.

    Args:
      events: ``(timestamp, item_id)`` of one user, sorted by ``(timestamp, event_id)``.
      history_length: N, the longest sequence.

    Yields:
      For each event in order, the items of the user's events strictly before its timestamp.
    """
    history: tuple[str, ...] = ()
    same_time_items: list[str] = []  # items of earlier events at the current timestamp
    current_time = None
    for timestamp, item_id in events:
        if timestamp != current_time:
            history = extend_history(history, same_time_items, history_length)
            same_time_items = []
            current_time = timestamp
        yield history
        same_time_items.append(item_id)


def latest_history(item_ids: Iterable[str], history_length: int) -> tuple[str, ...]:
    """The sequence after all of one user's events (``item_ids`` sorted by ``(timestamp, event_id)``):
    what serving uses as of now."""
    return extend_history((), item_ids, history_length)


def cutoff_from_quantiles(quantiles: Sequence[int], eval_fraction: float) -> int:
    """The eval cutoff (Unix seconds) from ``QUANTILES + 1`` evenly spaced quantiles, sorted."""
    if not quantiles:
        raise ValueError("no timestamps: cannot split an empty events file by time")
    return int(quantiles[min(len(quantiles) - 1, round((1.0 - eval_fraction) * (len(quantiles) - 1)))])


def exact_quantiles(timestamps: np.ndarray) -> np.ndarray:
    """``QUANTILES + 1`` evenly spaced quantiles of ``timestamps`` (``[E]`` int64), each a timestamp."""
    return np.quantile(timestamps, np.linspace(0.0, 1.0, QUANTILES + 1), method="nearest")


def time_cutoff(timestamps: np.ndarray, eval_fraction: float) -> int:
    """The eval cutoff of ``timestamps`` (``[E]`` int64 Unix seconds), computed in memory."""
    return cutoff_from_quantiles(list(exact_quantiles(np.asarray(timestamps))), eval_fraction)


def is_eval(timestamp: int, cutoff: int) -> bool:
    """Whether an event at ``timestamp`` belongs to the eval split."""
    return timestamp >= cutoff
