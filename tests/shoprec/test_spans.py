"""Spans and the rolling window (shoprec.data.spans): the window's events in span order with the
latest span's tables, an unchanged window left untouched (TFX fingerprints file times), a repeated
event refused, and the drift check's two spans named."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from shoprec import features
from shoprec.data import canonical, spans


def write_span(root: Path, span: int, event_ids: list[str], items: list[str]) -> None:
    folder = root / f"span-{span}"
    folder.mkdir(parents=True)
    pd.DataFrame({features.EVENT_ID: event_ids, features.USER_ID: ["u1"] * len(event_ids),
                  features.ITEM_ID: [items[0]] * len(event_ids), features.EVENT_TYPE: [features.CLICK] * len(event_ids),
                  features.TIMESTAMP: [span * 100 + n for n in range(len(event_ids))],
                  features.SESSION_ID: ["s"] * len(event_ids)}).to_csv(folder / features.EVENTS_FILE, index=False)
    pd.DataFrame({features.ITEM_ID: items, features.CATEGORY: ["a"] * len(items), features.BRAND: ["x"] * len(items),
                  features.PRICE: [1.0] * len(items)}).to_csv(folder / features.ITEMS_FILE, index=False)
    pd.DataFrame({features.USER_ID: ["u1"], features.AGE_GROUP: ["25-34"]}).to_csv(
        folder / features.USERS_FILE, index=False)


def test_the_window_joins_the_latest_spans_and_is_not_rewritten_unchanged(tmp_path: Path) -> None:
    root = tmp_path / "spans"
    write_span(root, 1, ["a1"], ["i0"])
    write_span(root, 2, ["b1", "b2"], ["i0", "i1"])
    write_span(root, 10, ["c1"], ["i0", "i1", "i2"])  # numbers, not names, order the spans
    turn = spans.prepare_turn(str(root), str(tmp_path / "windows"), window=2)
    assert turn.spans == (2, 10) and turn.window_dir == str(tmp_path / "windows" / "span-10")
    assert (turn.span_dir, turn.previous_span_dir) == (str(root / "span-10"), str(root / "span-2"))
    events = canonical.read_table(os.path.join(turn.window_dir, features.EVENTS_FILE))
    assert events[features.EVENT_ID].tolist() == ["b1", "b2", "c1"]
    assert len(canonical.read_table(os.path.join(turn.window_dir, features.ITEMS_FILE))) == 3  # the latest tables
    before = os.stat(os.path.join(turn.window_dir, features.EVENTS_FILE)).st_mtime_ns
    os.utime(os.path.join(turn.window_dir, features.EVENTS_FILE), ns=(before - 10**10, before - 10**10))
    again = spans.prepare_turn(str(root), str(tmp_path / "windows"), window=2)
    assert os.stat(os.path.join(again.window_dir, features.EVENTS_FILE)).st_mtime_ns == before - 10**10  # kept
    assert spans.window_spans(str(root), 5) == [1, 2, 10]


def test_bad_span_folders_are_refused(tmp_path: Path) -> None:
    with pytest.raises(canonical.DataError, match="does not exist"):
        spans.span_dirs(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(canonical.DataError, match="no span folders"):
        spans.span_dirs(str(tmp_path / "empty"))
    root = tmp_path / "spans"
    write_span(root, 1, ["a1"], ["i0"])
    write_span(root, 2, ["a1"], ["i0"])  # the same event again
    with pytest.raises(canonical.DataError, match="event 'a1' is in spans \\[1, 2\\]"):
        spans.assemble_window(str(root), str(tmp_path / "windows"), window=2)
    with pytest.raises(ValueError, match="window must be >= 1"):
        spans.window_spans(str(root), 0)
    only = spans.prepare_turn(str(root), str(tmp_path / "w"), window=1)
    assert only.previous_span_dir == str(root / "span-1")  # the drift check still compares spans 2 and 1
