"""EventsExampleGen's executor on a hand-made shop: point-in-time history, time split, errors."""

import os

import pytest
import tensorflow as tf
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import proto_utils

from components.events_example_gen import EventsExampleGen
from components.events_example_gen.executor import Executor
from shoprec import features as F
from shoprec.data import canonical

EVENTS = [  # event_id, user, item, type, timestamp
    ("e1", "u1", "i1", "click", 100),
    ("e2", "u1", "i1", "purchase", 100),  # same second as e1: e1 is not *before* it
    ("e3", "u1", "i2", "click", 200),
    ("e4", "u1", "i2", "click", 300),
    ("e5", "u1", "i3", "click", 400),     # i2 twice in a row is kept once
    ("e6", "u2", "i3", "click", 150),
    ("e7", "u2", "i1", "click", 900),
    ("e8", "u1", "i1", "click", 1000),
]


def write_shop(folder: str, events=EVENTS, items_header="item_id,category,brand,price",
               extra_event_line: str | None = None) -> str:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, F.EVENTS_FILE), "w") as f:
        f.write("event_id,user_id,item_id,event_type,timestamp,session_id\n")
        for event in events:
            f.write(",".join(map(str, event)) + ",s1\n")
        if extra_event_line:
            f.write(extra_event_line + "\n")
    with open(os.path.join(folder, F.ITEMS_FILE), "w") as f:
        f.write(items_header + "\n")
        for n in (1, 2, 3):
            f.write(f"i{n},cat0{n},brand0{n},{10.0 * n}\n")
    with open(os.path.join(folder, F.USERS_FILE), "w") as f:
        f.write("user_id,age_group\nu1,25-34\nu2,55+\n")
    return folder


def run_example_gen(data_dir: str, out_dir: str, history_length: int = 2) -> dict[str, list]:
    component = EventsExampleGen(input_base=data_dir, eval_fraction=0.25,
                                 history_length=history_length)
    exec_properties = {
        k: proto_utils.proto_to_json(v) if hasattr(v, "DESCRIPTOR") else v
        for k, v in component.exec_properties.items() if v is not None}
    examples = standard_artifacts.Examples()
    examples.uri = out_dir
    Executor().Do({}, {"examples": [examples]}, exec_properties)
    splits = {}
    for split in artifact_utils.decode_split_names(examples.split_names):
        files = tf.io.gfile.glob(os.path.join(out_dir, f"Split-{split}", "*"))
        rows = []
        for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
            example = tf.train.Example.FromString(record.numpy())
            feature = example.features.feature
            rows.append({
                "id": feature[F.EVENT_ID].bytes_list.value[0].decode(),
                "ts": feature[F.TIMESTAMP].int64_list.value[0],
                "history": [h.decode() for h in feature[F.HISTORY].bytes_list.value],
                "price": feature[F.PRICE].float_list.value[0],
                "age": feature[F.AGE_GROUP].bytes_list.value[0].decode(),
            })
        splits[split] = {row["id"]: row for row in rows}
    return splits


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("egen")
    return run_example_gen(write_shop(str(root / "data")), str(root / "out"))


def test_history_holds_only_earlier_items(splits):
    rows = {**splits["train"], **splits["eval"]}
    assert rows["e1"]["history"] == []
    assert rows["e2"]["history"] == []          # same timestamp is not "before"
    assert rows["e3"]["history"] == ["i1"]      # the click and purchase of i1 collapse
    assert rows["e4"]["history"] == ["i1", "i2"]
    assert rows["e5"]["history"] == ["i1", "i2"]  # repeated i2 kept once
    assert rows["e8"]["history"] == ["i2", "i3"]  # the last N=2 items only
    assert rows["e7"]["history"] == ["i3"]


def test_split_is_by_time_and_loses_nothing(splits):
    assert set(splits) == {"train", "eval"}
    assert len(splits["train"]) + len(splits["eval"]) == len(EVENTS)
    assert max(r["ts"] for r in splits["train"].values()) < min(
        r["ts"] for r in splits["eval"].values())
    # The cutoff is the 0.75 quantile of the 8 timestamps (the 6th smallest, 400).
    assert set(splits["eval"]) == {"e5", "e7", "e8"}


def test_item_and_user_columns_are_joined(splits):
    row = splits["train"]["e3"]
    assert row["price"] == pytest.approx(20.0) and row["age"] == "25-34"


def test_missing_column_names_file_and_column(tmp_path):
    data = write_shop(str(tmp_path / "data"), items_header="item_id,category,price")
    with pytest.raises(canonical.DataError, match=r"items.csv: missing column\(s\) brand"):
        run_example_gen(data, str(tmp_path / "out"))


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(canonical.DataError, match="input folder .*nowhere.* does not exist"):
        canonical.check_data_dir(str(tmp_path / "nowhere"))


@pytest.mark.parametrize("line, message", [
    ("e9,u1,i1,click,not-a-time,s1", "column 'timestamp' \\(int64\\) cannot hold 'not-a-time'"),
    ("e9,u1,i1,click,5", "has 5 fields, the header has 6"),
])
def test_malformed_row_is_refused_with_its_content(tmp_path, line, message):
    data = write_shop(str(tmp_path / "data"), extra_event_line=line)
    with pytest.raises(Exception, match=message):
        run_example_gen(data, str(tmp_path / "out"))


def test_event_of_unknown_item_is_refused(tmp_path):
    data = write_shop(str(tmp_path / "data"), events=EVENTS + [("e9", "u2", "i404", "click", 50)])
    with pytest.raises(Exception, match="event 'e9' refers to item 'i404'"):
        run_example_gen(data, str(tmp_path / "out"))


def test_invalid_split_settings_are_refused():
    with pytest.raises(ValueError, match="eval_fraction must be in"):
        EventsExampleGen(input_base="x", eval_fraction=1.0, history_length=3)
    with pytest.raises(ValueError, match="history_length must be >= 1"):
        EventsExampleGen(input_base="x", eval_fraction=0.2, history_length=-1)
