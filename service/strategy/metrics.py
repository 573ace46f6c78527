"""Prometheus metrics of the recommendation service (text exposition at ``GET /metrics``).

The counter and histogram types are the model server's (:mod:`serving.metrics`).
"""

from __future__ import annotations

from serving.metrics import Counter, Histogram

# Seconds: 1 ms .. about 2 s.
LATENCY_BUCKETS_S: tuple[float, ...] = (0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServiceMetrics:
    """Every metric of one service process."""

    def __init__(self) -> None:
        self.http_requests = Counter("shoprec_http_requests_total", "HTTP requests by path and status code.",
                                     ("path", "status"))
        self.recommend_latency = Histogram("shoprec_recommend_latency_seconds",
                                           "Time to answer /recommend, by scene.", ("scene",), LATENCY_BUCKETS_S)
        self.recommended_items = Counter("shoprec_recommended_items_total",
                                         "Items returned, by scene and the route that produced them.",
                                         ("scene", "route"))
        self.fallbacks = Counter("shoprec_fallbacks_total",
                                 "Responses showing items of the fallback route, by scene.", ("scene",))
        self.degraded = Counter("shoprec_degraded_total",
                                "Requests served without a component, by component (model, feature_store).",
                                ("component",))
        self.ignored_context_items = Counter("shoprec_ignored_context_items_total",
                                             "Unknown item ids in request contexts.", ())
        self.events = Counter("shoprec_events_total", "Accepted events by type (duplicates excluded).",
                              ("event_type",))
        self.attributed_events = Counter("shoprec_attributed_events_total",
                                         "Events on an item of a recent response, by scene, route and type.",
                                         ("scene", "route", "event_type"))
        self._all = (self.http_requests, self.recommend_latency, self.recommended_items, self.fallbacks,
                     self.degraded, self.ignored_context_items, self.events, self.attributed_events)

    def render(self) -> str:
        """Every metric in the Prometheus text exposition format."""
        lines: list[str] = []
        for metric in self._all:
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"
