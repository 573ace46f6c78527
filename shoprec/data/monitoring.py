"""Data monitoring: drift between spans and training/serving skew, with TFDV comparators.

Two checks, one report style (docs/monitoring.md):

* **Drift**: the new span's statistics against the previous span's
  (``tfdv.validate_statistics(current, schema, previous_statistics=previous)``), with a
  ``drift_comparator`` on each monitored feature of the schema.
* **Skew**: the training statistics against statistics of what the service saw
  (``tfdv.validate_statistics(training, schema, serving_statistics=serving)``), with a
  ``skew_comparator`` on each monitored feature. :func:`serving_frame` turns the canonical events
  that the service's event log exports (``service.event_log.export``) into the features the model
  sees for them: each event joined with its item's category, brand and price and its user's age
  group, exactly as ExampleGen joins them for training.

Categorical features are compared with the L-infinity distance (the largest change of any one
value's share, in [0, 1]); numeric ones with the Jensen-Shannon divergence of their histograms
(in [0, 1]). TFDV reports every measurement in ``Anomalies.drift_skew_info``; a measurement above
its threshold is a :class:`Finding`, and :func:`raise_on_findings` stops the turn with a
:class:`DataMonitoringError` whose message names each feature, the distance and the threshold.

Thresholds live in :class:`MonitoringConfig` (defaults below, documented in docs/monitoring.md).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Literal

import pandas as pd
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2

from shoprec import features

Kind = Literal["drift", "skew"]
Measure = Literal["linf", "jsd"]
_MEASURE_NAMES = {"linf": "L-infinity distance", "jsd": "Jensen-Shannon divergence"}
_MEASURE_OF_TYPE = {anomalies_pb2.DriftSkewInfo.Measurement.L_INFTY: "linf",
                    anomalies_pb2.DriftSkewInfo.Measurement.JENSEN_SHANNON_DIVERGENCE: "jsd"}
_COMPARED = {"drift": "the new span and the previous span", "skew": "training and serving"}


@dataclasses.dataclass(frozen=True)
class Threshold:
    """One comparator: ``measure`` (``"linf"`` or ``"jsd"``) above ``threshold`` is a finding."""

    measure: Measure
    threshold: float

    def __post_init__(self) -> None:
        if self.measure not in _MEASURE_NAMES:
            raise ValueError(f"measure must be linf or jsd, got {self.measure!r}")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"a threshold must be in (0, 1], got {self.threshold}")


# Defaults (docs/monitoring.md explains them). Categorical: 0.08 is eight points of share for
# any one value, e.g. a category at 8% of events moving to 16%. Sampling noise alone, measured
# between the two time halves of generated shops (3 seeds each): up to 0.061 (age_group) and 0.051
# (category) at 3,000 events, up to 0.036 at 20,000; tripling the largest category's share
# (~8%) gives 0.15-0.2. event_type moved at most 0.011, so it gets 0.05. Price: JSD of the
# histograms, noise up to 0.042 at 3,000 events.
DEFAULT_DRIFT: Mapping[str, Threshold] = {
    features.CATEGORY: Threshold("linf", 0.08),
    features.BRAND: Threshold("linf", 0.08),
    features.EVENT_TYPE: Threshold("linf", 0.05),
    features.AGE_GROUP: Threshold("linf", 0.08),
    features.PRICE: Threshold("jsd", 0.1),
}
# Skew compares the features the service saw with the training split: the same measures, a
# little looser, since logged traffic follows the model's own recommendations.
DEFAULT_SKEW: Mapping[str, Threshold] = {
    features.CATEGORY: Threshold("linf", 0.12),
    features.BRAND: Threshold("linf", 0.12),
    features.EVENT_TYPE: Threshold("linf", 0.1),
    features.AGE_GROUP: Threshold("linf", 0.12),
    features.PRICE: Threshold("jsd", 0.15),
}


@dataclasses.dataclass(frozen=True)
class MonitoringConfig:
    """Which features are watched and how far they may move.

    Attributes:
      drift: feature -> comparator for the new span against the previous span.
      skew: feature -> comparator for serving against training.
      split: the statistics split compared (ExampleGen's ``train``: the span's earlier 80%).
    """

    drift: Mapping[str, Threshold] = dataclasses.field(default_factory=lambda: dict(DEFAULT_DRIFT))
    skew: Mapping[str, Threshold] = dataclasses.field(default_factory=lambda: dict(DEFAULT_SKEW))
    split: str = "train"

    def to_json(self) -> str:
        """A JSON string (for a component parameter); :meth:`from_json` reads it back."""
        return json.dumps({"drift": {k: dataclasses.asdict(v) for k, v in self.drift.items()},
                           "skew": {k: dataclasses.asdict(v) for k, v in self.skew.items()},
                           "split": self.split}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> MonitoringConfig:
        raw = json.loads(text)
        return cls(drift={k: Threshold(**v) for k, v in raw["drift"].items()},
                   skew={k: Threshold(**v) for k, v in raw["skew"].items()}, split=raw["split"])


@dataclasses.dataclass(frozen=True)
class Finding:
    """One comparison: ``kind`` (drift or skew) of ``feature``, ``distance`` against ``threshold``."""

    kind: Kind
    feature: str
    measure: Measure
    distance: float
    threshold: float

    @property
    def exceeded(self) -> bool:
        return self.distance > self.threshold

    def line(self) -> str:
        """E.g. ``category: L-infinity distance 0.1023 > threshold 0.05``."""
        relation = ">" if self.exceeded else "<="
        return (f"{self.feature}: {_MEASURE_NAMES[self.measure]} {self.distance:.4f} {relation} "
                f"threshold {self.threshold:g}")


class DataMonitoringError(RuntimeError):
    """A drift or skew beyond its threshold: the turn stops (the message names each feature)."""

    def __init__(self, kind: Kind, findings: Sequence[Finding], where: str):
        self.kind = kind
        self.findings = tuple(findings)
        lines = "\n  ".join(f.line() for f in self.findings)
        super().__init__(f"data {kind} between {_COMPARED[kind]} beyond its threshold{where}. "
                         f"The turn stops; nothing is pushed. Findings:\n  {lines}")


def _set_comparator(comparator: schema_pb2.FeatureComparator, threshold: Threshold) -> None:
    comparator.Clear()
    if threshold.measure == "linf":
        comparator.infinity_norm.threshold = threshold.threshold
    else:
        comparator.jensen_shannon_divergence.threshold = threshold.threshold


def with_comparators(schema: schema_pb2.Schema, config: MonitoringConfig = MonitoringConfig()
                     ) -> schema_pb2.Schema:
    """A copy of ``schema`` with ``drift_comparator`` and ``skew_comparator`` set from ``config``.

    Raises:
      KeyError: a configured feature the schema does not declare.
    """
    result = schema_pb2.Schema()
    result.CopyFrom(schema)
    declared = {feature.name: feature for feature in result.feature}
    for kind, thresholds in (("drift", config.drift), ("skew", config.skew)):
        for name, threshold in thresholds.items():
            if name not in declared:
                raise KeyError(f"{kind} threshold for {name!r}, which the schema does not declare "
                               f"(it has {', '.join(sorted(declared))})")
            field = declared[name].drift_comparator if kind == "drift" else declared[name].skew_comparator
            _set_comparator(field, threshold)
    return result


def _findings(kind: Kind, anomalies: anomalies_pb2.Anomalies) -> list[Finding]:
    findings = []
    for info in anomalies.drift_skew_info:
        measurements = info.drift_measurements if kind == "drift" else info.skew_measurements
        for measurement in measurements:
            if measurement.type not in _MEASURE_OF_TYPE:
                continue  # a comparator this module does not set (e.g. from a hand-edited schema)
            findings.append(Finding(kind, ".".join(info.path.step), _MEASURE_OF_TYPE[measurement.type],
                                    float(measurement.value), float(measurement.threshold)))
    return sorted(findings, key=lambda f: (not f.exceeded, -f.distance / f.threshold, f.feature))


def _one_dataset(statistics: statistics_pb2.DatasetFeatureStatisticsList, what: str
                 ) -> statistics_pb2.DatasetFeatureStatisticsList:
    """``statistics`` itself, checked to hold one dataset (TFDV compares ``datasets[0]`` only)."""
    if len(statistics.datasets) != 1:
        raise ValueError(f"expected the {what} statistics of one split, got {len(statistics.datasets)} datasets")
    return statistics


def drift(current: statistics_pb2.DatasetFeatureStatisticsList,
          previous: statistics_pb2.DatasetFeatureStatisticsList, schema: schema_pb2.Schema,
          config: MonitoringConfig = MonitoringConfig()) -> list[Finding]:
    """Every drift comparison of ``config.drift``, those beyond their threshold first.

    Args:
      current: statistics of the new span (one dataset).
      previous: statistics of the previous span (one dataset).
      schema: the curated schema (comparators are added from ``config``).
    """
    anomalies = tfdv.validate_statistics(_one_dataset(current, "current"), with_comparators(schema, config),
                                         previous_statistics=_one_dataset(previous, "previous"))
    return _findings("drift", anomalies)


def skew(training: statistics_pb2.DatasetFeatureStatisticsList,
         serving: statistics_pb2.DatasetFeatureStatisticsList, schema: schema_pb2.Schema,
         config: MonitoringConfig = MonitoringConfig()) -> list[Finding]:
    """Every skew comparison of ``config.skew``, those beyond their threshold first.

    Args:
      training: statistics of the training split (one dataset).
      serving: statistics of what the service saw (:func:`serving_statistics`).
      schema: the curated schema (comparators are added from ``config``).
    """
    anomalies = tfdv.validate_statistics(_one_dataset(training, "training"), with_comparators(schema, config),
                                         serving_statistics=_one_dataset(serving, "serving"))
    return _findings("skew", anomalies)


def raise_on_findings(kind: Kind, findings: Sequence[Finding], where: str = "") -> None:
    """Raises :class:`DataMonitoringError` naming every finding beyond its threshold, if any."""
    exceeded = [f for f in findings if f.exceeded]
    if exceeded:
        raise DataMonitoringError(kind, exceeded, where)


def serving_frame(events: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame) -> pd.DataFrame:
    """The features the model saw for logged events: one row per event.

    Args:
      events: canonical events (``features.EVENT_COLUMNS``), e.g. the event log's export;
        impressions, if present, are dropped (they are not training examples).
      items: the catalogue (``features.ITEM_COLUMNS``).
      users: the users (``features.USER_COLUMNS``); a user missing from it gets ``(unknown)``.

    Returns:
      Columns ``user_id, item_id, event_type, category, brand, price, age_group``; an event whose
      item is not in the catalogue gets ``(unknown)`` category and brand and no price.
    """
    events = events[events[features.EVENT_TYPE] != features.IMPRESSION]
    item_columns = [features.ITEM_ID, features.CATEGORY, features.BRAND, features.PRICE]
    joined = events[[features.USER_ID, features.ITEM_ID, features.EVENT_TYPE]].astype(str).merge(
        items[item_columns].astype({features.ITEM_ID: str}), on=features.ITEM_ID, how="left").merge(
        users[[features.USER_ID, features.AGE_GROUP]].astype(str), on=features.USER_ID, how="left")
    for column in (features.CATEGORY, features.BRAND, features.AGE_GROUP):
        joined[column] = joined[column].fillna(features.UNKNOWN).astype(str)
    joined[features.PRICE] = joined[features.PRICE].astype("float32")
    return joined.reset_index(drop=True)


def serving_statistics(frame: pd.DataFrame) -> statistics_pb2.DatasetFeatureStatisticsList:
    """TFDV statistics of :func:`serving_frame`'s output (``generate_statistics_from_dataframe``)."""
    if frame.empty:
        raise ValueError("no logged events to compare with training")
    return tfdv.generate_statistics_from_dataframe(frame)


def inject_category_drift(events: pd.DataFrame, items: pd.DataFrame, category: str,
                          factor: float = 3.0, seed: int = 0) -> pd.DataFrame:
    """A drill: ``events`` with ``category``'s share of events multiplied by ``factor``.

    Events of the category's items are duplicated (drawn with replacement, new event ids
    ``<id>-drift<k>``, same users, items and timestamps) until the category holds ``factor``
    times its share. Used by the tests and docs/monitoring.md to show the gate stops a turn.

    Args:
      events: canonical events.
      items: the catalogue (for each item's category).
      category: the category whose share grows.
      factor: > 1; the new share is ``factor * share`` (which must stay below 1).
      seed: seeds the draw.

    Raises:
      ValueError: no event of ``category``, or a share that cannot grow that much.
    """
    category_of = items.set_index(features.ITEM_ID)[features.CATEGORY]
    in_category = events[features.ITEM_ID].map(category_of).eq(category).to_numpy()
    count, total = int(in_category.sum()), len(events)
    if count == 0 or factor * count >= total or factor <= 1:
        raise ValueError(f"cannot multiply {category!r}'s share ({count} of {total} events) by {factor}")
    extra = round((factor - 1) * count * total / (total - factor * count))
    rng = pd.Series(range(count)).sample(n=extra, replace=True, random_state=seed).to_numpy()
    duplicates = events[in_category].iloc[rng].copy()
    duplicates[features.EVENT_ID] = [f"{event_id}-drift{k}" for k, event_id in
                                     enumerate(duplicates[features.EVENT_ID].astype(str))]
    return pd.concat([events, duplicates]).sort_values(features.TIMESTAMP, kind="stable").reset_index(drop=True)
