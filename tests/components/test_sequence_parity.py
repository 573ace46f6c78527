"""One rule, two paths: EventsExampleGen (Beam) and the service (pandas + live requests) build the
same behaviour sequences and the same time split from the same events.

A generated shop goes through the real Beam executor and through ``build_interactions`` /
``split_by_time``. Each user gets one probe event one second after the data ends, so the
sequence Beam writes for it is the user's sequence "as of now", which serving must equal.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from service.strategy.catalogue import Catalogue
from service.strategy.interactions import build_interactions, read_events, split_by_time
from shoprec import features as F
from shoprec.config import ShopConfig
from shoprec.data import generate, point_in_time
from tests.components.test_example_gen import run_example_gen

HISTORY_LENGTH = 5
PROBE = "probe-"


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, dict[str, dict]]:
    root = tmp_path_factory.mktemp("parity")
    data_dir = str(root / "data")
    generate.write_shop(generate.generate_shop(ShopConfig(users=60, items=40, events=1500, seed=3)), data_dir)
    events = read_events(data_dir)
    # Repeats and same-second events exercise the collapse and the "strictly before" rule.
    assert (events.groupby([F.USER_ID, F.TIMESTAMP]).size() > 1).any()
    end = int(events[F.TIMESTAMP].max())
    probes = pd.DataFrame({F.EVENT_ID: [f"{PROBE}{u}" for u in sorted(events[F.USER_ID].unique())],
                           F.USER_ID: sorted(events[F.USER_ID].unique()),
                           F.ITEM_ID: events[F.ITEM_ID].iloc[0], F.EVENT_TYPE: F.CLICK,
                           F.TIMESTAMP: end + 1, F.SESSION_ID: "probe"})
    probed_dir = str(root / "probed")
    os.makedirs(probed_dir)
    for name in (F.ITEMS_FILE, F.USERS_FILE):
        os.link(os.path.join(data_dir, name), os.path.join(probed_dir, name))
    pd.concat([events, probes])[[c.name for c in F.EVENT_COLUMNS]].to_csv(
        os.path.join(probed_dir, F.EVENTS_FILE), index=False)
    beam_rows = run_example_gen(probed_dir, str(root / "out"), history_length=HISTORY_LENGTH)
    return data_dir, probed_dir, beam_rows


def test_serving_sequences_equal_the_pipelines(shop: tuple[str, str, dict[str, dict]]) -> None:
    data_dir, _, beam_rows = shop
    online = build_interactions(read_events(data_dir), Catalogue.load(data_dir), HISTORY_LENGTH).histories
    probes = {row_id[len(PROBE):]: row["history"] for split in beam_rows.values()
              for row_id, row in split.items() if row_id.startswith(PROBE)}
    assert len(probes) == len(online) == read_events(data_dir)[F.USER_ID].nunique() > 40
    assert {user: list(history) for user, history in online.items()} == probes
    assert max(len(h) for h in probes.values()) == HISTORY_LENGTH


def test_live_events_extend_the_sequence_as_the_pipeline_would() -> None:
    # A live click on the last item is a repeat (collapsed); the window slides by one item.
    assert point_in_time.extend_history(("a", "b", "c"), ["c", "d", "d", "e"], 4) == ("b", "c", "d", "e")
    events = [(1, "a"), (1, "b"), (2, "b"), (3, "c"), (3, "c")]
    assert list(point_in_time.histories_before(events, 2)) == [(), (), ("a", "b"), ("a", "b"), ("a", "b")]


def test_time_split_is_the_same_on_both_paths(shop: tuple[str, str, dict[str, dict]]) -> None:
    _, probed_dir, beam_rows = shop
    events = read_events(probed_dir)  # the events Beam split, probes included
    train, eval_set = split_by_time(events, eval_fraction=0.25)
    assert set(eval_set[F.EVENT_ID]) == set(beam_rows["eval"])
    assert set(train[F.EVENT_ID]) == set(beam_rows["train"])
    assert len(train) + len(eval_set) == len(events)
    assert 0.2 < len(eval_set) / len(events) < 0.3
    cutoff = point_in_time.time_cutoff(events[F.TIMESTAMP].to_numpy(), 0.25)
    assert np.all(eval_set[F.TIMESTAMP] >= cutoff) and np.all(train[F.TIMESTAMP] < cutoff)
