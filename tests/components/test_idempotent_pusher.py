"""The Pushers' executor: TFX's Pusher, except that a model identical to the serving version is not pushed again."""

import os
from pathlib import Path

from tfx.proto import pusher_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.utils import proto_utils

from components.idempotent_pusher import Executor, latest_version, model_digest
from components.idempotent_pusher.executor import IDENTICAL_TO_VERSION


def _model(root: Path, name: str, weights: bytes) -> standard_artifacts.Model:
    serving = root / name / "Format-Serving"
    (serving / "variables").mkdir(parents=True)
    (serving / "saved_model.pb").write_bytes(b"graph")
    (serving / "variables" / "variables.data-00000-of-00001").write_bytes(weights)
    model = standard_artifacts.Model()
    model.uri = str(root / name)
    return model


def _push(tmp_path: Path, model: standard_artifacts.Model, serving_dir: Path,
          blessed: int = 1) -> standard_artifacts.PushedModel:
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(tmp_path / "blessing")
    blessing.set_int_custom_property("blessed", blessed)
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / f"pushed-{len(list(tmp_path.glob('pushed-*')))}")
    os.makedirs(pushed.uri)
    destination = pusher_pb2.PushDestination(
        filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=str(serving_dir)))
    inputs = {standard_component_specs.MODEL_KEY: [model], standard_component_specs.MODEL_BLESSING_KEY: [blessing]}
    Executor().Do(inputs, {standard_component_specs.PUSHED_MODEL_KEY: [pushed]},
                  {standard_component_specs.PUSH_DESTINATION_KEY: proto_utils.proto_to_json(destination)})
    return pushed


def test_an_identical_model_is_not_pushed_again_and_a_different_one_is(tmp_path, monkeypatch):
    serving_dir = tmp_path / "serving" / "shoprec_ranking"
    first = _push(tmp_path, _model(tmp_path, "run1", b"weights-1"), serving_dir)
    assert first.get_int_custom_property("pushed") == 1
    version = first.get_string_custom_property("pushed_version")
    assert os.listdir(serving_dir) == [version]
    # The same files from another Trainer execution (a cached or deterministic retrain).
    again = _push(tmp_path, _model(tmp_path, "run2", b"weights-1"), serving_dir)
    assert again.get_int_custom_property("pushed") == 0
    assert again.get_string_custom_property(IDENTICAL_TO_VERSION) == version
    assert os.listdir(serving_dir) == [version]
    # Different weights: a new version (the Pusher names versions by the clock's seconds).
    monkeypatch.setattr("time.time", lambda: int(version) + 5)
    changed = _push(tmp_path, _model(tmp_path, "run3", b"weights-2"), serving_dir)
    assert changed.get_int_custom_property("pushed") == 1
    assert sorted(os.listdir(serving_dir)) == [version, str(int(version) + 5)]


def test_an_unblessed_model_is_not_pushed_and_not_marked_identical(tmp_path):
    serving_dir = tmp_path / "serving" / "m"
    refused = _push(tmp_path, _model(tmp_path, "run1", b"w"), serving_dir, blessed=0)
    assert refused.get_int_custom_property("pushed") == 0
    assert not refused.has_custom_property(IDENTICAL_TO_VERSION)
    assert not serving_dir.exists()


def test_only_the_latest_version_counts_so_a_rollback_is_pushed(tmp_path):
    serving_dir = tmp_path / "serving" / "m"
    for version, weights in (("100", b"old"), ("200", b"new")):
        (serving_dir / version).mkdir(parents=True)
        (serving_dir / version / "saved_model.pb").write_bytes(weights)
    (serving_dir / "tmp-not-a-version").mkdir()
    assert latest_version(str(serving_dir)) == "200"
    assert latest_version(str(tmp_path / "absent")) is None
    assert model_digest(str(serving_dir / "100")) != model_digest(str(serving_dir / "200"))
    old = tmp_path / "old" / "Format-Serving"
    old.mkdir(parents=True)
    (old / "saved_model.pb").write_bytes(b"old")
    model = standard_artifacts.Model()
    model.uri = str(tmp_path / "old")
    assert _push(tmp_path, model, serving_dir).get_int_custom_property("pushed") == 1
    assert len([name for name in os.listdir(serving_dir) if name.isdigit()]) == 3  # 100, 200, the rollback
