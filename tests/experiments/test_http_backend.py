"""The HTTP backend's request format, against a tiny local stub server.

This checks only what the simulator sends and how it reads answers; the HTTP mode is tested
against the real recommendation service later (once /recommend reports experiment and arm).
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import threading

import numpy as np
import pytest

from experiments import traffic
from experiments.http_backend import HttpBackend, ServiceError
from experiments.simulator import SCENES, ShopSimulator, draw_shop_truth
from shoprec.config import ShopConfig


class _Stub(http.server.BaseHTTPRequestHandler):
    received: list[tuple[str, dict, str | None]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Stub.received.append((self.path, body, self.headers.get("Authorization")))
        if self.path == "/recommend":
            answer = {"request_id": f"r{len(_Stub.received)}", "experiment": "e1", "arm": "b",
                      "propensity": 0.5,
                      "items": [{"item_id": "i3"}, {"item_id": "i7"}, {"item_id": "nope"}]}
        elif self.path == "/events":
            answer = {"accepted": len(body["events"])}
        else:
            self.send_response(404)
            self.end_headers()
            return
        payload = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def stub_url():
    _Stub.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_recommend_and_events_format(stub_url):
    sim = ShopSimulator(draw_shop_truth(dataclasses.replace(ShopConfig(), users=200, items=50)))
    backend = HttpBackend(sim, stub_url, api_key="secret")
    log = traffic.run_traffic(sim, backend, np.random.default_rng(0), [6], k=4, send_events=True)
    recommends = [body for path, body, _ in _Stub.received if path == "/recommend"]
    assert len(recommends) == 6
    for body, scene, context in zip(recommends, log.visits.scene, log.visits.context_item):
        assert set(body) == {"user_id", "scene", "k", "context"} and body["k"] == 4
        assert body["scene"] == SCENES[scene]
        if SCENES[scene] == "detail":
            assert body["context"] == {"current_item": f"i{context}"}
        elif SCENES[scene] == "cart":
            assert body["context"] == {"cart_items": [f"i{context}"]}
        else:
            assert body["context"] == {}
    assert all(auth == "Bearer secret" for _, _, auth in _Stub.received)
    assert log.served.slates[0].tolist() == [3, 7, -1, -1]  # unknown ids and short slates
    assert set(log.served.arm) == {"b"} and set(log.served.propensity) == {0.5}
    events = [event for path, body, _ in _Stub.received if path == "/events"
              for event in body["events"]]
    impressions = [e for e in events if e["event_type"] == "impression"]
    assert len(impressions) == 12  # two known items per slate
    assert {"user_id", "item_id", "event_type", "request_id", "timestamp"} <= set(events[0])
    assert {e["request_id"] for e in impressions} == set(log.served.request_ids)


def test_service_error_says_where(stub_url):
    sim = ShopSimulator(draw_shop_truth(dataclasses.replace(ShopConfig(), users=50, items=30)))
    backend = HttpBackend(sim, stub_url)
    with pytest.raises(ServiceError, match="/missing answered 404"):
        backend._post("/missing", {})
