"""Prometheus metrics of the model server, in the text exposition format, and request logs.

Two of the metrics carry TF Serving's own names and labels, so that dashboards and alerts written
for TF Serving (scraped from ``/monitoring/prometheus/metrics``) work unchanged:

* ``:tensorflow:serving:request_count{model_name,status}``
* ``:tensorflow:serving:request_latency{model_name,API,entrypoint}`` (microseconds)
* ``:tensorflow:cc:saved_model:load_attempt_count{model_path,status}``

Two more break requests down further:

* ``model_server_requests_total{model_name,model_version,signature_name,API,entrypoint,status}``
* ``model_server_request_errors_total{model_name,API,entrypoint,status}``
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import threading
from collections.abc import Sequence

from serving.errors import Code

PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
REST = "REST"
GRPC = "GRPC"

# TF Serving's latency buckets: 10 us * 1.8^i, 33 buckets (up to about 20 minutes).
LATENCY_BUCKETS_US: tuple[float, ...] = tuple(10 * 1.8**i for i in range(33))

_request_log = logging.getLogger("serving.requests")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels_text(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    pairs = [f'{name}="{_escape(value)}"' for name, value in zip(names, values)]
    if extra:
        pairs.append(extra)
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Counter:
    """A counter with labels."""

    def __init__(self, name: str, help_text: str, label_names: Sequence[str]) -> None:
        self.name = name
        self.help_text = help_text
        self.label_names = tuple(label_names)
        self._values: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()

    def inc(self, *label_values: str, amount: float = 1.0) -> None:
        """Adds ``amount`` to the series with these label values."""
        with self._lock:
            self._values[label_values] = self._values.get(label_values, 0.0) + amount

    def render(self) -> list[str]:
        """Returns the exposition lines of this metric."""
        lines = [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} counter"]
        with self._lock:
            for values, count in sorted(self._values.items()):
                lines.append(f"{self.name}{_labels_text(self.label_names, values)} {_number_text(count)}")
        return lines


class Histogram:
    """A histogram with labels and fixed bucket bounds."""

    def __init__(self, name: str, help_text: str, label_names: Sequence[str], buckets: Sequence[float]) -> None:
        self.name = name
        self.help_text = help_text
        self.label_names = tuple(label_names)
        self.buckets = tuple(buckets)
        self._series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}
        self._lock = threading.Lock()

    def observe(self, value: float, *label_values: str) -> None:
        """Records one observation in the series with these label values."""
        with self._lock:
            counts, total = self._series.setdefault(label_values, ([0] * (len(self.buckets) + 1), [0.0]))
            counts[bisect.bisect_left(self.buckets, value)] += 1
            total[0] += value

    def render(self) -> list[str]:
        """Returns the exposition lines of this metric (cumulative buckets, sum and count)."""
        lines = [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} histogram"]
        with self._lock:
            for values, (counts, total) in sorted(self._series.items()):
                cumulative = 0
                for bound, count in zip((*self.buckets, float("inf")), counts):
                    cumulative += count
                    le = "+Inf" if bound == float("inf") else _number_text(bound)
                    labels = _labels_text(self.label_names, values, f'le="{le}"')
                    lines.append(f"{self.name}_bucket{labels} {cumulative}")
                labels = _labels_text(self.label_names, values)
                lines.append(f"{self.name}_sum{labels} {_number_text(total[0])}")
                lines.append(f"{self.name}_count{labels} {cumulative}")
        return lines


@dataclasses.dataclass
class RequestRecord:
    """What one request was, filled in while it is handled, for metrics and the request log.

    Attributes:
        entrypoint: ``REST`` or ``GRPC``.
        api: ``predict``, ``get_model_metadata``, ``get_model_status`` ...
        model_name: The model asked for ("" before it is known).
        model_version: The version that answered ("" when none did).
        signature_name: The signature that ran ("" when none did).
    """

    entrypoint: str
    api: str
    model_name: str = ""
    model_version: str = ""
    signature_name: str = ""


class ServingMetrics:
    """All metrics of one model server."""

    def __init__(self, log_successful_requests: bool = False) -> None:
        """``log_successful_requests``: a log line for every request, not only the failed ones."""
        self.log_successful_requests = log_successful_requests
        self.request_count = Counter(
            ":tensorflow:serving:request_count", "The total number of requests.", ("model_name", "status")
        )
        self.request_latency = Histogram(
            ":tensorflow:serving:request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ("model_name", "API", "entrypoint"),
            LATENCY_BUCKETS_US,
        )
        self.load_attempt_count = Counter(
            ":tensorflow:cc:saved_model:load_attempt_count",
            "The number of attempts to load a SavedModel, by outcome.",
            ("model_path", "status"),
        )
        self.requests_total = Counter(
            "model_server_requests_total",
            "Requests by model, version, signature, API, entrypoint (protocol) and status.",
            ("model_name", "model_version", "signature_name", "API", "entrypoint", "status"),
        )
        self.request_errors_total = Counter(
            "model_server_request_errors_total",
            "Failed requests by model, API, entrypoint (protocol) and status code.",
            ("model_name", "API", "entrypoint", "status"),
        )
        self._all = (
            self.request_count,
            self.request_latency,
            self.load_attempt_count,
            self.requests_total,
            self.request_errors_total,
        )

    def record_request(self, record: RequestRecord, code: Code, seconds: float, error_message: str = "") -> None:
        """Counts a finished request, observes its latency and logs it (failed ones always)."""
        status = code.name
        self.request_count.inc(record.model_name, status)
        self.request_latency.observe(seconds * 1e6, record.model_name, record.api, record.entrypoint)
        self.requests_total.inc(
            record.model_name,
            record.model_version,
            record.signature_name,
            record.api,
            record.entrypoint,
            status,
        )
        if code is not Code.OK:
            self.request_errors_total.inc(record.model_name, record.api, record.entrypoint, status)
        elif not self.log_successful_requests:
            return  # a line per request costs a lock and a write on the hot path
        _request_log.info(
            "%s %s model=%s version=%s signature=%s status=%s latency_ms=%.2f%s",
            record.entrypoint,
            record.api,
            record.model_name or "-",
            record.model_version or "-",
            record.signature_name or "-",
            status,
            seconds * 1e3,
            f" error={error_message!r}" if error_message else "",
        )

    def record_load(self, model_path: str, succeeded: bool) -> None:
        """Counts one attempt to load a SavedModel."""
        self.load_attempt_count.inc(model_path, "success" if succeeded else "fail")

    def render(self) -> str:
        """Returns every metric in the Prometheus text exposition format."""
        lines: list[str] = []
        for metric in self._all:
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"
