"""ModelGateway against a scripted client: version pinning, switching, retries, padding."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from service.strategy.model_gateway import ModelGateway, ModelUnavailableError
from serving.client import Code, ModelServerError, VersionStatus
from shoprec import features


class ScriptedClient:
    """Answers like the model server for a catalogue of 3 items; versions change on demand."""

    def __init__(self, top_k_embedding: bool = False) -> None:
        self.available: list[int] = [1]
        self.calls: list[tuple[str, int | None, dict[str, Any]]] = []
        self.down = False
        self.top_k_embedding = top_k_embedding  # recommend_with_history returns the query embedding

    def status(self) -> list[VersionStatus]:
        if self.down:
            raise ModelServerError(Code.UNAVAILABLE, "connection refused")
        return [VersionStatus(version, "AVAILABLE", "OK", "") for version in self.available] + [
            VersionStatus(0, "END", "OK", "")]

    def predict(self, inputs: dict[str, Any], signature_name: str, version: int | None = None) -> dict[str, Any]:
        self.calls.append((signature_name, version, inputs))
        if version not in self.available:
            raise ModelServerError(Code.NOT_FOUND, f"Servable not found for request: Specific(m, {version})")
        if signature_name == features.SIGNATURE_ITEM_EMBEDDING:
            ids = inputs[features.ITEM_ID]
            embedding = np.array([[float(version), 0.0] if item != "i2" else [0.0, 0.0] for item in ids])
            return {features.OUTPUT_EMBEDDING: embedding, features.OUTPUT_FOUND: np.array([i != "i2" for i in ids])}
        query = np.array([[3.0 * version, 4.0 * len(inputs[features.HISTORY][0][0])]], np.float32)
        if signature_name == features.SIGNATURE_QUERY_EMBEDDING:
            return {features.OUTPUT_EMBEDDING: query}
        top_k = {features.OUTPUT_ITEM_IDS: np.array([[b"i1", b"i0"]], dtype=object),
                 features.OUTPUT_SCORES: np.array([[0.5, 0.25]], dtype=np.float32)}
        return {**top_k, features.OUTPUT_EMBEDDING: query} if self.top_k_embedding else top_k

    def close(self) -> None:
        pass


def test_pins_versions_and_follows_the_server() -> None:
    client = ScriptedClient()
    gateway = ModelGateway(client, np.array(["i0", "i1", "i2"]), history_length=4,  # type: ignore[arg-type]
                           embedding_batch_size=2)
    with pytest.raises(ModelUnavailableError, match="no model version"):
        gateway.top_k("u1", [])  # before the first refresh: fail fast
    assert gateway.refresh().version == 1
    item_ids, scores, version = gateway.top_k("u1", ["a", "b"])
    assert (item_ids, scores.tolist(), version) == (["i1", "i0"], [0.5, 0.25], 1)
    signature, pinned, inputs = client.calls[-1]
    assert (signature, pinned) == (features.SIGNATURE_TOP_K_WITH_HISTORY, 1)
    assert inputs == {features.USER_ID: ["u1"], features.HISTORY: [["a", "b", "", ""]]}  # padded: batchable
    served = gateway.served
    assert served is not None and served.found.tolist() == [True, True, False]
    np.testing.assert_allclose(served.embeddings, [[1, 0], [1, 0], [0, 0]])  # unit rows, zeros where missing
    assert sum(call[0] == features.SIGNATURE_ITEM_EMBEDDING for call in client.calls) == 2  # 3 items, batches of 2

    gateway.top_k("u1", [f"x{n}" for n in range(9)])
    assert client.calls[-1][2][features.HISTORY] == [["x5", "x6", "x7", "x8"]]  # only the latest 4

    client.available = [1, 2]  # a new version: the next refresh switches, after embedding it
    assert gateway.refresh().version == 2
    assert gateway.top_k("u1", [])[2] == 2

    client.available = [3]  # version 2 unloaded under us: NOT_FOUND, refresh, one retry
    assert gateway.top_k("u1", [])[2] == 3
    top_k_versions = [call[1] for call in client.calls if call[0] == features.SIGNATURE_TOP_K_WITH_HISTORY]
    assert top_k_versions[-2:] == [2, 3]


def test_unavailable_model() -> None:
    client = ScriptedClient()
    client.down = True
    gateway = ModelGateway(client, np.array(["i0"]))  # type: ignore[arg-type]
    with pytest.raises(ModelServerError):
        gateway.refresh()
    client.down, client.available = False, []
    assert gateway.refresh() is None
    with pytest.raises(ModelUnavailableError):
        gateway.current()
    client.available = [5]
    gateway.refresh()
    assert gateway.current().version == 5
    client.available = []  # unloaded, nothing else: NOT_FOUND, then nothing to switch to
    with pytest.raises(ModelUnavailableError, match="no AVAILABLE version"):
        gateway.top_k("u1", [])


@pytest.mark.parametrize("top_k_embedding", [True, False])
def test_query_embedding_reuses_the_one_a_top_k_call_of_the_same_query_returned(top_k_embedding: bool) -> None:
    client = ScriptedClient(top_k_embedding)
    gateway = ModelGateway(client, np.array(["i0", "i1"]), history_length=2)  # type: ignore[arg-type]
    gateway.refresh()
    gateway.top_k("u1", ["a"])
    calls = len(client.calls)
    vector, served = gateway.query_embedding("u1", ["a"])
    np.testing.assert_allclose(vector, [0.6, 0.8], rtol=1e-6)  # unit, either way
    assert served.version == 1
    # With the embedding in the top-k reply, the same query costs no call; an older export has none.
    assert len(client.calls) - calls == (0 if top_k_embedding else 1)
    gateway.query_embedding("u1", ["a", "b"])  # another history: another query
    gateway.query_embedding("u2", ["a"])  # another user
    client.available = [1, 2]
    gateway.refresh()
    np.testing.assert_allclose(gateway.query_embedding("u1", ["a"])[0], np.array([6, 4]) / np.hypot(6, 4),
                               rtol=1e-6)  # version 2's own
    asked = [call for call in client.calls[calls:] if call[0] == features.SIGNATURE_QUERY_EMBEDDING]
    assert [(call[1], call[2][features.USER_ID]) for call in asked][-3:] == [(1, ["u1"]), (1, ["u2"]), (2, ["u1"])]


def test_remembered_queries_are_bounded() -> None:
    client = ScriptedClient(top_k_embedding=True)
    gateway = ModelGateway(client, np.array(["i0"]), history_length=1, remembered_queries=2)  # type: ignore[arg-type]
    gateway.refresh()
    for user in ("u1", "u2", "u3"):
        gateway.top_k(user, ["a"])
    calls = len(client.calls)
    gateway.query_embedding("u3", ["a"])
    gateway.query_embedding("u2", ["a"])
    assert len(client.calls) == calls
    gateway.query_embedding("u1", ["a"])  # the least recent, dropped
    assert len(client.calls) == calls + 1
