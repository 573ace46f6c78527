"""Spans: the event log's exports, one folder per turn, and the rolling window a turn trains on.

Layout of a spans folder (``python -m service.event_log export_span`` writes the next one)::

    spans/span-1/{events,items,users}.csv [impressions.csv]
    spans/span-2/...

Each span holds the events logged since the previous span, and the whole catalogue and user
table as of its export (attributes change; the latest span's tables are the current ones).

A turn trains on the rolling window of the latest ``window`` spans. :func:`assemble_window`
writes it as one canonical folder, ``<windows>/span-<N>/``: the window's events (and
impressions) in span order, the latest span's items and users. Every component reads that
folder, so the window has one reader (:mod:`shoprec.data.canonical`) and one time split; the
ExampleGen's input pattern ``span-{SPAN}/*.csv`` makes TFX resolve span ``N`` and record it on
the Examples artifact (``span`` property, ML Metadata), as TFX's span mechanism does.
"""

from __future__ import annotations

import dataclasses
import filecmp
import os
import re
import shutil
import tempfile

from shoprec import features
from shoprec.data import canonical

SPAN_PREFIX = "span-"
SPAN_PATTERN = SPAN_PREFIX + "{SPAN}/*.csv"  # ExampleGen's input_config pattern over the windows
_SPAN_DIR = re.compile(r"span-(\d+)")


def span_dirs(spans_root: str) -> dict[int, str]:
    """Span number -> its folder, for every ``span-<N>`` folder of ``spans_root``.

    Raises:
      canonical.DataError: ``spans_root`` is not a folder or holds no span.
    """
    if not os.path.isdir(spans_root):
        raise canonical.DataError(f"spans folder {spans_root!r} does not exist")
    found = {int(match.group(1)): os.path.join(spans_root, name) for name in os.listdir(spans_root)
             if (match := _SPAN_DIR.fullmatch(name)) and os.path.isdir(os.path.join(spans_root, name))}
    if not found:
        raise canonical.DataError(f"{spans_root}: no span folders ({SPAN_PREFIX}<N>/ with the canonical files)")
    return found


def window_spans(spans_root: str, window: int, last: int | None = None) -> list[int]:
    """The spans of the window ending at ``last`` (default: the latest), oldest first.

    Raises:
      ValueError: ``window`` < 1.
      canonical.DataError: no spans, or ``last`` is not one of them.
    """
    if window < 1:
        raise ValueError(f"the span window must be >= 1, got {window}")
    spans = span_dirs(spans_root)
    last = max(spans) if last is None else last
    if last not in spans:
        raise canonical.DataError(f"{spans_root}: no span {last} (spans: {sorted(spans)})")
    return [span for span in sorted(spans) if span <= last][-window:]


@dataclasses.dataclass(frozen=True)
class SpanTurn:
    """One turn's data: the assembled window and the two spans the drift check compares.

    Attributes:
      windows_dir: the folder of assembled windows (ExampleGen's input base, pattern
        :data:`SPAN_PATTERN`).
      window_dir: this turn's window, ``<windows_dir>/span-<N>/`` (every component's data folder).
      spans: the window's span numbers, oldest first.
      span_dir: the new span's own folder.
      previous_span_dir: the span before it (None on the first span).
    """

    windows_dir: str
    window_dir: str
    spans: tuple[int, ...]
    span_dir: str
    previous_span_dir: str | None


def prepare_turn(spans_root: str, windows_dir: str, window: int) -> SpanTurn:
    """Assembles the window ending at the latest span (:func:`assemble_window`) and names the
    spans the drift check compares (the latest and the one before it)."""
    folders = span_dirs(spans_root)
    spans = window_spans(spans_root, window)
    earlier = [span for span in folders if span < spans[-1]]
    return SpanTurn(windows_dir, assemble_window(spans_root, windows_dir, window), tuple(spans),
                    folders[spans[-1]], folders[max(earlier)] if earlier else None)


def assemble_window(spans_root: str, windows_root: str, window: int, last: int | None = None) -> str:
    """Writes the window ending at span ``last`` (default: the latest) as canonical files in
    ``<windows_root>/span-<last>/`` and returns that folder.

    An existing window folder with the same content is left as it is (so its files keep their
    times and TFX's input fingerprint, and a rerun is cached).

    Raises:
      canonical.DataError: a span lacks a canonical file or column, or two spans share an event id.
    """
    spans = window_spans(spans_root, window, last)
    folders = span_dirs(spans_root)
    latest = folders[spans[-1]]
    for span in spans:
        canonical.check_data_dir(folders[span])
    import pandas as pd

    events = []
    for span in spans:
        frame = canonical.read_table(os.path.join(folders[span], features.EVENTS_FILE))
        events.append(frame.assign(**{"_span": span}))
    joined = pd.concat(events, ignore_index=True)
    repeated = joined[joined.duplicated(features.EVENT_ID, keep=False)]
    if len(repeated):
        first = repeated.iloc[0]
        spans_of = sorted(repeated[repeated[features.EVENT_ID] == first[features.EVENT_ID]]["_span"])
        raise canonical.DataError(f"{spans_root}: event {first[features.EVENT_ID]!r} is in spans {spans_of}; "
                                  f"a span holds only the events logged since the previous one")
    target = os.path.join(windows_root, f"{SPAN_PREFIX}{spans[-1]}")
    os.makedirs(windows_root, exist_ok=True)
    staging = tempfile.mkdtemp(dir=windows_root, prefix=".staging-")
    joined.drop(columns="_span").to_csv(os.path.join(staging, features.EVENTS_FILE), index=False)
    for name in (features.ITEMS_FILE, features.USERS_FILE):
        shutil.copyfile(os.path.join(latest, name), os.path.join(staging, name))
    impressions = [os.path.join(folders[span], features.IMPRESSIONS_FILE) for span in spans
                   if os.path.exists(os.path.join(folders[span], features.IMPRESSIONS_FILE))]
    if impressions:
        frames = [pd.read_csv(path, dtype=str, keep_default_na=False) for path in impressions]  # as written
        pd.concat(frames, ignore_index=True).to_csv(os.path.join(staging, features.IMPRESSIONS_FILE), index=False)
    if os.path.isdir(target) and _same_files(staging, target):
        shutil.rmtree(staging)
        return target
    if os.path.isdir(target):
        shutil.rmtree(target)
    os.replace(staging, target)
    return target


def _same_files(one: str, other: str) -> bool:
    names = sorted(os.listdir(one))
    return names == sorted(os.listdir(other)) and all(
        filecmp.cmp(os.path.join(one, name), os.path.join(other, name), shallow=False) for name in names)


def split_by_time(data_dir: str, spans_root: str, boundaries: tuple[float, ...]) -> list[str]:
    """Cuts one shop's events into spans by time (a drill, and how the tests make a history of
    turns): span ``k`` holds the events between the ``boundaries[k-1]`` and ``boundaries[k]``
    quantiles of the timestamps (0 and 1 at the ends), each span with the shop's items and users.

    Args:
      data_dir: canonical files.
      spans_root: where ``span-1/`` ... are written (it must not hold spans yet).
      boundaries: increasing cut points in (0, 1), e.g. ``(0.5,)`` for two halves.

    Returns:
      The span folders, oldest first.
    """
    if list(boundaries) != sorted(boundaries) or not all(0.0 < b < 1.0 for b in boundaries):
        raise ValueError(f"boundaries must increase within (0, 1), got {boundaries}")
    if os.path.isdir(spans_root) and any(_SPAN_DIR.fullmatch(name) for name in os.listdir(spans_root)):
        raise canonical.DataError(f"{spans_root}: already holds spans")
    import numpy as np

    canonical.check_data_dir(data_dir)
    events = canonical.read_table(os.path.join(data_dir, features.EVENTS_FILE))
    times = events[features.TIMESTAMP].to_numpy(np.int64)
    cuts = [times.min() - 1, *np.quantile(times, boundaries).astype(np.int64), times.max()]
    folders = []
    for span, (start, end) in enumerate(zip(cuts[:-1], cuts[1:]), start=1):
        folder = os.path.join(spans_root, f"{SPAN_PREFIX}{span}")
        os.makedirs(folder)
        events[(times > start) & (times <= end)].to_csv(os.path.join(folder, features.EVENTS_FILE), index=False)
        for name in (features.ITEMS_FILE, features.USERS_FILE):
            shutil.copyfile(os.path.join(data_dir, name), os.path.join(folder, name))
        folders.append(folder)
    return folders
