"""DriftGate in a real two-turn TFX pipeline, and SkewGate on logged events (real TFDV).

Each turn runs EventsExampleGen over one span of a small generated shop -> ImportSchemaGen ->
StatisticsGen; a resolver hands the previous turn's statistics to DriftGate; the standard Pusher
runs only after the gate. The first turn (no previous span) passes and pushes; a second turn whose
span has the largest category's share tripled stops in the gate, naming ``category`` and the
distance, and pushes nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import tensorflow_data_validation as tfdv
from tfx import v1 as tfx
from tfx.orchestration import metadata
from tfx.types import artifact_utils, standard_artifacts

from bench import synthetic_model
from components.drift_gate import DriftGate, SkewGate
from components.drift_gate.component import REPORT_FILE, SCHEMA_FILE
from components.events_example_gen import EventsExampleGen
from pipeline.run_schema import CURATED_SCHEMA
from shoprec import features
from shoprec.config import ShopConfig
from shoprec.data import generate, monitoring

MODEL_NAME = "shoprec_retrieval"


def write_span(folder: Path, events: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame) -> Path:
    folder.mkdir(parents=True)
    for name, frame in ((features.EVENTS_FILE, events), (features.ITEMS_FILE, items), (features.USERS_FILE, users)):
        frame.to_csv(folder / name, index=False)
    return folder


@pytest.fixture(scope="module")
def shop_spans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Span 1 and span 2 (the two halves by time), and span 2 with its largest category tripled."""
    root = tmp_path_factory.mktemp("spans")
    shop = generate.generate_shop(ShopConfig(users=300, items=200, events=3000, seed=3))
    events = shop.events.sort_values(features.TIMESTAMP).reset_index(drop=True)
    half = len(events) // 2
    first, second = events.iloc[:half], events.iloc[half:]
    category = second[features.ITEM_ID].map(shop.items.set_index(features.ITEM_ID)[features.CATEGORY]).mode()[0]
    return {"span1": write_span(root / "span1", first, shop.items, shop.users),
            "span2": write_span(root / "span2", second, shop.items, shop.users),
            "drifted": write_span(root / "drifted", monitoring.inject_category_drift(second, shop.items, category),
                                  shop.items, shop.users),
            "category": category}


def turn(root: Path, span_dir: Path, model_dir: Path) -> None:
    """One turn of the loop on ``span_dir`` (same pipeline name and ML Metadata every turn)."""
    example_gen = EventsExampleGen(input_base=str(span_dir), eval_fraction=0.2, history_length=5)
    schema_gen = tfx.components.ImportSchemaGen(schema_file=CURATED_SCHEMA)
    previous = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestArtifactStrategy,
        statistics=tfx.dsl.Channel(type=standard_artifacts.ExampleStatistics)).with_id("previous_span_statistics")
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"],
                                                  schema=schema_gen.outputs["schema"])
    statistics_gen.add_upstream_node(previous)  # resolve the previous turn's statistics first
    gate = DriftGate(statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"],
                     previous_statistics=previous.outputs["statistics"])
    model = tfx.dsl.Importer(source_uri=str(model_dir), artifact_type=standard_artifacts.Model,
                             custom_properties={"tfx_version": "1.16.0"}).with_id("model_importer")
    blessing = tfx.dsl.Importer(source_uri=str(model_dir), artifact_type=standard_artifacts.ModelBlessing,
                                custom_properties={"blessed": 1}).with_id("blessing_importer")
    pusher = tfx.components.Pusher(
        model=model.outputs["result"], model_blessing=blessing.outputs["result"],
        push_destination=tfx.proto.PushDestination(filesystem=tfx.proto.PushDestination.Filesystem(
            base_directory=str(root / "serving" / MODEL_NAME))))
    pusher.add_upstream_node(gate)  # in create_pipeline, Transform reads gate.outputs["validated_schema"]
    tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
        pipeline_name="drift_loop", pipeline_root=str(root / "pipeline_root"),
        components=[example_gen, schema_gen, previous, statistics_gen, gate, model, blessing, pusher],
        enable_cache=False,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            str(root / "metadata.sqlite"))))


def pushed_versions(root: Path) -> list[str]:
    folder = root / "serving" / MODEL_NAME
    return sorted(os.listdir(folder)) if folder.exists() else []


def artifacts(root: Path, type_name: str) -> list:
    config = tfx.orchestration.metadata.sqlite_metadata_connection_config(str(root / "metadata.sqlite"))
    with metadata.Metadata(config) as store:
        return store.store.get_artifacts_by_type(type_name)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("model")
    synthetic_model.synthetic_serving_module(num_items=50, top_k=10, num_users=20).save(
        str(root / "Format-Serving"))
    return root


def test_an_unchanged_span_passes_and_a_tripled_category_stops_the_turn_with_nothing_pushed(
        tmp_path: Path, shop_spans: dict[str, object], model_dir: Path) -> None:
    turn(tmp_path, shop_spans["span1"], model_dir)  # first turn: no previous span, passes
    first_push = pushed_versions(tmp_path)
    assert len(first_push) == 1
    report = json.loads(Path(artifacts(tmp_path, "ExampleAnomalies")[0].uri, REPORT_FILE).read_text())
    assert report["passed"] and report["findings"] == []

    turn(tmp_path, shop_spans["span2"], model_dir)  # an unchanged span: compared, passes, pushes
    assert len(pushed_versions(tmp_path)) == 2
    report = json.loads(Path(artifacts(tmp_path, "ExampleAnomalies")[-1].uri, REPORT_FILE).read_text())
    assert report["passed"] and {f["feature"] for f in report["findings"]} == set(monitoring.DEFAULT_DRIFT)
    assert os.path.isfile(Path(artifacts(tmp_path, "Schema")[-1].uri, SCHEMA_FILE))

    pushed_before = pushed_versions(tmp_path)
    with pytest.raises(monitoring.DataMonitoringError) as stopped:
        turn(tmp_path, shop_spans["drifted"], model_dir)
    message = str(stopped.value)
    assert "data drift between the new span and the previous span beyond its threshold" in message
    assert "nothing is pushed" in message
    finding = stopped.value.findings[0]
    assert (finding.feature, finding.measure) == (features.CATEGORY, "linf")
    assert finding.distance > 0.1 and finding.threshold == 0.08
    assert f"category: L-infinity distance {finding.distance:.4f} > threshold 0.08" in message
    assert pushed_versions(tmp_path) == pushed_before  # the drifted turn pushed nothing
    assert len(artifacts(tmp_path, "PushedModel")) == 2


def statistics_artifact(root: Path, frame: pd.DataFrame) -> standard_artifacts.ExampleStatistics:
    artifact = standard_artifacts.ExampleStatistics()
    artifact.uri = str(root / "statistics")
    artifact.split_names = artifact_utils.encode_split_names(["train"])
    split_dir = Path(artifact_utils.get_split_uri([artifact], "train"))
    split_dir.mkdir(parents=True)
    (split_dir / "FeatureStats.pb").write_bytes(  # as StatisticsGen writes it: a binary proto
        tfdv.generate_statistics_from_dataframe(frame).SerializeToString())
    return artifact


def schema_artifacts(root: Path) -> tuple[standard_artifacts.Schema, standard_artifacts.Schema]:
    schema, validated = standard_artifacts.Schema(), standard_artifacts.Schema()
    schema.uri, validated.uri = str(root / "schema"), str(root / "validated")
    os.makedirs(schema.uri)
    os.makedirs(validated.uri)
    Path(schema.uri, "schema.pbtxt").write_text(Path(CURATED_SCHEMA).read_text())
    return schema, validated


@pytest.mark.parametrize("serving_span, stops", [("span2", False), ("drifted", True)])
def test_skew_gate_compares_logged_serving_events_with_training(
        tmp_path: Path, shop_spans: dict[str, object], serving_span: str, stops: bool) -> None:
    run_gate = SkewGate.EXECUTOR_SPEC.executor_class._FUNCTION
    tables = {span: {name: pd.read_csv(Path(shop_spans[span], name), dtype={features.ITEM_ID: str})
                     for name in (features.EVENTS_FILE, features.ITEMS_FILE, features.USERS_FILE)}
              for span in ("span1", serving_span)}
    training = monitoring.serving_frame(*(tables["span1"][n] for n in (features.EVENTS_FILE, features.ITEMS_FILE,
                                                                        features.USERS_FILE)))
    statistics = statistics_artifact(tmp_path, training)
    schema, validated = schema_artifacts(tmp_path)
    report = standard_artifacts.ExampleAnomalies()
    report.uri = str(tmp_path / "report")
    kwargs = dict(statistics=statistics, schema=schema, report=report, validated_schema=validated,
                  serving_data_dir=str(shop_spans[serving_span]), config="")
    if stops:
        with pytest.raises(monitoring.DataMonitoringError, match="(?s)data skew between training and serving.*"
                                                                 "category: L-infinity distance"):
            run_gate(**kwargs)
        assert os.listdir(validated.uri) == []
    else:
        run_gate(**kwargs)
        assert os.listdir(validated.uri) == [SCHEMA_FILE]
    saved = json.loads(Path(report.uri, REPORT_FILE).read_text())
    assert saved["kind"] == "skew" and saved["passed"] is (not stops)
    assert report.get_int_custom_property("blessed") == int(not stops)
