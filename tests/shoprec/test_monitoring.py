"""Drift and skew with real TFDV statistics of generated spans (shoprec.data.monitoring).

Two spans are the two halves (by time) of one small generated shop; the drifted span has one
category's share tripled (``inject_category_drift``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tensorflow_data_validation as tfdv

from pipeline.run_schema import CURATED_SCHEMA
from shoprec import features
from shoprec.config import ShopConfig
from shoprec.data import generate, monitoring


@pytest.fixture(scope="module")
def spans() -> dict[str, pd.DataFrame]:
    shop = generate.generate_shop(ShopConfig(users=300, items=200, events=3000, seed=3))
    events = shop.events.sort_values(features.TIMESTAMP).reset_index(drop=True)
    half = len(events) // 2
    previous, current = events.iloc[:half], events.iloc[half:]
    top = current[features.ITEM_ID].map(shop.items.set_index(features.ITEM_ID)[features.CATEGORY]).value_counts()
    drifted = monitoring.inject_category_drift(current, shop.items, top.index[0], factor=3.0)
    return {"previous": previous, "current": current, "drifted": drifted, "items": shop.items,
            "users": shop.users, "category": top.index[0]}


def statistics(spans: dict[str, pd.DataFrame], name: str):
    return monitoring.serving_statistics(monitoring.serving_frame(spans[name], spans["items"], spans["users"]))


@pytest.fixture(scope="module")
def schema():
    return tfdv.load_schema_text(CURATED_SCHEMA)


def test_injected_drift_triples_the_category_share(spans: dict[str, pd.DataFrame]) -> None:
    def share(events: pd.DataFrame) -> float:
        categories = events[features.ITEM_ID].map(spans["items"].set_index(features.ITEM_ID)[features.CATEGORY])
        return float(np.mean(categories == spans["category"]))

    assert share(spans["drifted"]) == pytest.approx(3 * share(spans["current"]), rel=0.01)
    assert spans["drifted"][features.EVENT_ID].is_unique


def test_an_unchanged_span_passes_the_drift_check(spans, schema) -> None:
    findings = monitoring.drift(statistics(spans, "current"), statistics(spans, "previous"), schema)
    assert {f.feature for f in findings} == set(monitoring.DEFAULT_DRIFT)  # every watched feature measured
    assert [f for f in findings if f.exceeded] == []
    monitoring.raise_on_findings("drift", findings)  # does not raise


def test_a_tripled_category_share_stops_the_turn_naming_category_and_the_distance(spans, schema) -> None:
    current, previous = statistics(spans, "drifted"), statistics(spans, "previous")
    findings = monitoring.drift(current, previous, schema)
    worst = findings[0]
    assert (worst.kind, worst.feature, worst.measure, worst.exceeded) == ("drift", features.CATEGORY, "linf", True)
    # The largest category (~8-10% of events) triples: the L-infinity distance is its share's growth.
    assert 0.1 < worst.distance < 0.4 and worst.threshold == 0.08
    with pytest.raises(monitoring.DataMonitoringError) as stopped:
        monitoring.raise_on_findings("drift", findings)
    message = str(stopped.value)
    assert "data drift between the new span and the previous span" in message
    assert f"category: L-infinity distance {worst.distance:.4f} > threshold 0.08" in message
    assert stopped.value.findings[0].feature == features.CATEGORY


def test_thresholds_are_configurable(spans, schema) -> None:
    loose = monitoring.MonitoringConfig(drift={features.CATEGORY: monitoring.Threshold("linf", 0.9)})
    assert monitoring.MonitoringConfig.from_json(loose.to_json()) == loose
    findings = monitoring.drift(statistics(spans, "drifted"), statistics(spans, "previous"), schema, loose)
    assert [(f.feature, f.exceeded) for f in findings] == [(features.CATEGORY, False)]
    with pytest.raises(KeyError, match="'colour'.*does not declare"):
        monitoring.with_comparators(schema, monitoring.MonitoringConfig(drift={"colour": monitoring.Threshold("linf", 0.1)}))
    with pytest.raises(ValueError, match="threshold must be in"):
        monitoring.Threshold("linf", 0.0)


def test_skew_between_training_and_logged_serving_events(spans, schema) -> None:
    training = statistics(spans, "previous")
    assert [f for f in monitoring.skew(training, statistics(spans, "current"), schema) if f.exceeded] == []
    skewed = monitoring.skew(training, statistics(spans, "drifted"), schema)
    assert (skewed[0].kind, skewed[0].feature, skewed[0].exceeded) == ("skew", features.CATEGORY, True)
    with pytest.raises(monitoring.DataMonitoringError, match="(?s)data skew between training and serving.*category: "
                                                             "L-infinity distance"):
        monitoring.raise_on_findings("skew", skewed)


def test_serving_frame_joins_item_and_user_features_and_drops_impressions(spans) -> None:
    events = spans["current"].head(3).copy()
    impression = events.iloc[:1].assign(**{features.EVENT_TYPE: features.IMPRESSION})
    unknown = events.iloc[:1].assign(**{features.ITEM_ID: "not-in-catalogue", features.USER_ID: "new-user"})
    frame = monitoring.serving_frame(pd.concat([events, impression, unknown]), spans["items"], spans["users"])
    assert len(frame) == 4
    assert list(frame.columns) == [features.USER_ID, features.ITEM_ID, features.EVENT_TYPE, features.CATEGORY,
                                   features.BRAND, features.PRICE, features.AGE_GROUP]
    assert frame.iloc[3][features.CATEGORY] == features.UNKNOWN and frame.iloc[3][features.AGE_GROUP] == features.UNKNOWN
    assert np.isnan(frame.iloc[3][features.PRICE])
