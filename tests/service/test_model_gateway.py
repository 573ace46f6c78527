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

    def __init__(self) -> None:
        self.available: list[int] = [1]
        self.calls: list[tuple[str, int | None, dict[str, Any]]] = []
        self.down = False

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
        return {features.OUTPUT_ITEM_IDS: np.array([[b"i1", b"i0"]], dtype=object),
                features.OUTPUT_SCORES: np.array([[0.5, 0.25]], dtype=np.float32)}

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
