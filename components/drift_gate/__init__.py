"""Data monitoring gates: drift between spans and training/serving skew (TFDV comparators)."""

from components.drift_gate.component import DriftGate, SkewGate, SpanDriftGate  # noqa: F401
