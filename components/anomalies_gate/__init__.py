from components.anomalies_gate.component import AnomaliesGate, DataAnomaliesError  # noqa: F401
