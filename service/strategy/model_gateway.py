"""The service's doors to the models on TF Serving (or the local model server).

:class:`ModelGateway` is the retrieval model's. It pins every request to one model version, so
the version a response reports is the version that answered. A poller follows the server: when a
higher version becomes AVAILABLE, the gateway reads that version's item embeddings
(``item_embedding`` signature, for the similar-items route and the ranking model's retrieval
score) and only then switches to it. A version unloaded under a request (NOT_FOUND) triggers a
refresh and one retry.

A model whose ``recommend_with_history`` also returns the query ``embedding`` saves the ranking
stage a call: the gateway keeps the last few thousand of them, keyed by version, user and
history, and ``query_embedding`` answers from there when the same query was just retrieved.

:class:`RankingGateway` is the ranking model's (a second model on the same server, its own name
in ``models.config``): the same version pinning, polling and retry, without embeddings.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from serving.client import AVAILABLE, Code, ModelClient, ModelServerError
from shoprec import config, features

_log = logging.getLogger(__name__)


class ModelUnavailableError(RuntimeError):
    """No model version is available (the server is down or has not loaded one yet)."""


@dataclasses.dataclass(frozen=True)
class ServedModel:
    """One model version and the catalogue's embeddings in it.

    Attributes:
      version: the model version.
      embeddings: ``[I, D]`` unit item embeddings in catalogue row order (zeros where missing).
      found: ``[I]`` whether the model knows each catalogue item.
    """

    version: int
    embeddings: np.ndarray
    found: np.ndarray


def _unit(vector: np.ndarray) -> np.ndarray:
    """``[D]`` float32 vector scaled to length 1 (zeros stay zeros)."""
    vector = np.asarray(vector, np.float32)
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


class _QueryEmbeddings:
    """The unit query embeddings of the latest ``capacity`` top-k calls, least recent dropped.

    A key is ``(version, user_id, padded history)``: the same inputs to the same version give
    the same embedding, so a hit is exact, never stale.
    """

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[tuple[int, str, tuple[str, ...]], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()  # the sync path runs on the server's worker threads

    @staticmethod
    def key(version: int, inputs: dict[str, list]) -> tuple[int, str, tuple[str, ...]]:
        return version, inputs[features.USER_ID][0], tuple(inputs[features.HISTORY][0])

    def get(self, key: tuple[int, str, tuple[str, ...]]) -> np.ndarray | None:
        with self._lock:
            vector = self._entries.get(key)
            if vector is not None:
                self._entries.move_to_end(key)
            return vector

    def put(self, key: tuple[int, str, tuple[str, ...]], vector: np.ndarray) -> None:
        with self._lock:
            self._entries[key] = vector
            self._entries.move_to_end(key)
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)


def _text(values: np.ndarray) -> list[str]:
    return [value.decode() if isinstance(value, bytes) else str(value) for value in values]


class _PolledGateway:
    """A gateway whose model version follows the server: ``refresh()`` now and then every
    ``interval_seconds`` in a daemon thread, until ``close()``.

    Subclasses define ``refresh()`` (raising :class:`ModelServerError` when the server cannot be
    asked), ``_client``, and may override ``_refresh_failed`` and ``_poller_name``.
    """

    _poller_name = "model-poll"
    _client: ModelClient

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    @property
    def model_name(self) -> str:
        """The model's name on the server."""
        return self._client.model_name

    def refresh(self) -> object:
        raise NotImplementedError

    def start_polling(self, interval_seconds: float) -> None:
        """Refreshes now (failures are logged) and then every ``interval_seconds`` in a thread."""
        self._poll_once()
        self._poller = threading.Thread(target=self._poll, args=(interval_seconds,), name=self._poller_name,
                                        daemon=True)
        self._poller.start()

    def _poll_once(self) -> None:
        try:
            self.refresh()
        except ModelServerError as err:
            self._refresh_failed(err)

    def _refresh_failed(self, err: ModelServerError) -> None:
        _log.warning("model server refresh failed: %s: %s", err.code.name, err.message)

    def _poll(self, interval_seconds: float) -> None:
        while not self._stop.wait(interval_seconds):
            self._poll_once()

    def close(self) -> None:
        """Stops the poller and closes the client."""
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)
        self._client.close()


class ModelGateway(_PolledGateway):
    """Calls the retrieval model's signatures through :class:`serving.client.ModelClient`.

    Args:
      client: a client of the model (REST or gRPC).
      catalogue_item_ids: ``[I]`` item ids in catalogue row order.
      history_length: histories are cut or ``""``-padded to this length, so that every request
        has the same shape and the server can batch concurrent ones together.
      embedding_batch_size: item ids per ``item_embedding`` request (at most the server's
        ``max_batch_size`` when it batches).
      remembered_queries: query embeddings kept from top-k calls for ``query_embedding``.
    """

    def __init__(self, client: ModelClient, catalogue_item_ids: np.ndarray,
                 history_length: int = config.SplitConfig.history_length, embedding_batch_size: int = 100,
                 remembered_queries: int = 4096) -> None:
        super().__init__()
        self._client = client
        self._history_length = history_length
        self._item_ids = [str(item_id) for item_id in catalogue_item_ids]
        self._batch_size = embedding_batch_size
        self._served: ServedModel | None = None
        self._refresh_lock = threading.Lock()
        self._queries = _QueryEmbeddings(remembered_queries)

    @property
    def served(self) -> ServedModel | None:
        """The version in use and its embeddings; None before the first successful refresh."""
        return self._served

    def refresh(self) -> ServedModel | None:
        """Switches to the highest AVAILABLE version if it is new.

        Returns:
          The version in use afterwards (None when the server has none).

        Raises:
          ModelServerError: the server could not be asked, or failed to embed the catalogue.
        """
        with self._refresh_lock:
            available = [status.version for status in self._client.status() if status.state == AVAILABLE]
            if not available:
                self._served = None
                return None
            newest = max(available)
            if self._served is None or self._served.version != newest:
                embeddings, found = self._embed_catalogue(newest)
                self._served = ServedModel(newest, embeddings, found)
                _log.info("serving model version %d (%d of %d catalogue items embedded)",
                          newest, int(found.sum()), len(found))
            return self._served

    def _embed_catalogue(self, version: int) -> tuple[np.ndarray, np.ndarray]:
        embeddings, found = [], []
        for start in range(0, len(self._item_ids), self._batch_size):
            outputs = self._client.predict({features.ITEM_ID: self._item_ids[start:start + self._batch_size]},
                                           signature_name=features.SIGNATURE_ITEM_EMBEDDING, version=version)
            embeddings.append(np.asarray(outputs[features.OUTPUT_EMBEDDING], np.float32))
            found.append(np.asarray(outputs[features.OUTPUT_FOUND], bool))
        if not embeddings:
            return np.zeros((0, 0), np.float32), np.zeros(0, bool)
        matrix = np.concatenate(embeddings)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return matrix / np.maximum(norms, 1e-12), np.concatenate(found)

    def _refreshed(self) -> ServedModel:
        try:
            served = self.refresh()
        except ModelServerError as err:
            raise ModelUnavailableError(f"model server unreachable: {err.code.name}: {err.message}") from err
        if served is None:
            raise ModelUnavailableError("the model server has no AVAILABLE version")
        return served

    def current(self) -> ServedModel:
        """The version in use.

        Without one (the server was down at the last poll), requests fail fast instead of each
        waiting for a server that may hang: the poller brings the model back.

        Raises:
          ModelUnavailableError: no version is available.
        """
        served = self._served
        if served is None:
            raise ModelUnavailableError("no model version is available (the model server is polled for one)")
        return served

    def top_k(self, user_id: str, history: Sequence[str]) -> tuple[list[str], np.ndarray, int]:
        """Runs ``recommend_with_history`` for one user.

        Args:
          user_id: the user (an unknown id gets the model's out-of-vocabulary profile).
          history: recent item ids, most recent last (only the last ``history_length`` are used).

        Returns:
          ``(item_ids, scores, version)``, best first.

        Raises:
          ModelUnavailableError: no version is available.
          ModelServerError: the prediction failed.
        """
        inputs = self._top_k_inputs(user_id, history)
        served = self.current()
        for attempt in range(2):
            try:
                outputs = self._client.predict(inputs, signature_name=features.SIGNATURE_TOP_K_WITH_HISTORY,
                                               version=served.version)
            except ModelServerError as err:
                if attempt or err.code is not Code.NOT_FOUND:
                    raise
                served = self._refreshed()  # the version went away: follow the server
                continue
            return self._top_k_result(inputs, outputs, served.version)
        raise AssertionError("unreachable")

    async def top_k_async(self, user_id: str, history: Sequence[str]) -> tuple[list[str], np.ndarray, int]:
        """``top_k`` for asyncio code: the same request, result and errors, awaited (a refresh
        after NOT_FOUND runs in the default executor)."""
        inputs = self._top_k_inputs(user_id, history)
        served = self.current()
        for attempt in range(2):
            try:
                outputs = await self._client.predict_async(
                    inputs, signature_name=features.SIGNATURE_TOP_K_WITH_HISTORY, version=served.version)
            except ModelServerError as err:
                if attempt or err.code is not Code.NOT_FOUND:
                    raise
                served = await asyncio.to_thread(self._refreshed)
                continue
            return self._top_k_result(inputs, outputs, served.version)
        raise AssertionError("unreachable")

    def query_embedding(self, user_id: str, history: Sequence[str]) -> tuple[np.ndarray, ServedModel]:
        """The user tower's unit query embedding ``[D]`` (``query_embedding`` signature, or the
        embedding a top-k call of the same query returned), with the version (and its unit item
        embeddings) it belongs to.

        Raises:
          ModelUnavailableError: no version is available.
          ModelServerError: the prediction failed.
        """
        served = self.current()
        inputs = self._top_k_inputs(user_id, history)
        remembered = self._queries.get(_QueryEmbeddings.key(served.version, inputs))
        if remembered is not None:
            return remembered, served
        outputs = self._client.predict(inputs, signature_name=features.SIGNATURE_QUERY_EMBEDDING,
                                       version=served.version)
        return _unit(outputs[features.OUTPUT_EMBEDDING][0]), served

    async def query_embedding_async(self, user_id: str, history: Sequence[str]) -> tuple[np.ndarray, ServedModel]:
        """``query_embedding`` for asyncio code (same result and errors)."""
        served = self.current()
        inputs = self._top_k_inputs(user_id, history)
        remembered = self._queries.get(_QueryEmbeddings.key(served.version, inputs))
        if remembered is not None:
            return remembered, served
        outputs = await self._client.predict_async(inputs, signature_name=features.SIGNATURE_QUERY_EMBEDDING,
                                                   version=served.version)
        return _unit(outputs[features.OUTPUT_EMBEDDING][0]), served

    def _top_k_inputs(self, user_id: str, history: Sequence[str]) -> dict[str, list]:
        recent = list(history)[-self._history_length:]
        padded = recent + [""] * (self._history_length - len(recent))
        return {features.USER_ID: [user_id], features.HISTORY: [padded]}

    def _top_k_result(self, inputs: dict[str, list], outputs: dict[str, np.ndarray],
                      version: int) -> tuple[list[str], np.ndarray, int]:
        if features.OUTPUT_EMBEDDING in outputs:  # a model exported before it returned one has none
            self._queries.put(_QueryEmbeddings.key(version, inputs), _unit(outputs[features.OUTPUT_EMBEDDING][0]))
        return (_text(outputs[features.OUTPUT_ITEM_IDS][0]),
                np.asarray(outputs[features.OUTPUT_SCORES][0], np.float64), version)



class RankingGateway(_PolledGateway):
    """Calls the ranking model's ``serving_default`` signature through a :class:`ModelClient`.

    Args:
      client: a client of the ranking model (its own model name on the same server).
    """

    _poller_name = "ranking-model-poll"

    def __init__(self, client: ModelClient) -> None:
        super().__init__()
        self._client = client
        self._version: int | None = None

    @property
    def version(self) -> int | None:
        """The version in use; None before the first successful refresh or while none is AVAILABLE."""
        return self._version

    def refresh(self) -> int | None:
        """Switches to the highest AVAILABLE version.

        Raises:
          ModelServerError: the server could not be asked (NOT_FOUND: it serves no such model).
        """
        available = [status.version for status in self._client.status() if status.state == AVAILABLE]
        if self._version != (max(available) if available else None):
            _log.info("ranking model version %s", max(available) if available else None)
        self._version = max(available) if available else None
        return self._version

    def _current(self) -> int:
        if self._version is None:
            raise ModelUnavailableError("no ranking model version is available (the model server is polled for one)")
        return self._version

    def predict(self, inputs: dict[str, list | np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
        """Scores candidates: ``inputs`` as the ranking signature takes them, each ``[N]``.

        Returns:
          ``(outputs, version)``: ``click_probability`` and ``purchase_probability``, each ``[N]``.

        Raises:
          ModelUnavailableError: no version is available.
          ModelServerError: the prediction failed.
        """
        version = self._current()
        for attempt in range(2):
            try:
                return self._client.predict(inputs, signature_name=features.SIGNATURE_RANK, version=version), version
            except ModelServerError as err:
                if attempt or err.code is not Code.NOT_FOUND:
                    raise
                version = self._refreshed()
        raise AssertionError("unreachable")

    async def predict_async(self, inputs: dict[str, list | np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
        """``predict`` for asyncio code (same result and errors)."""
        version = self._current()
        for attempt in range(2):
            try:
                outputs = await self._client.predict_async(inputs, signature_name=features.SIGNATURE_RANK,
                                                           version=version)
                return outputs, version
            except ModelServerError as err:
                if attempt or err.code is not Code.NOT_FOUND:
                    raise
                version = await asyncio.to_thread(self._refreshed)
        raise AssertionError("unreachable")

    def _refreshed(self) -> int:
        try:
            version = self.refresh()
        except ModelServerError as err:
            raise ModelUnavailableError(f"ranking model unreachable: {err.code.name}: {err.message}") from err
        if version is None:
            raise ModelUnavailableError("the model server has no AVAILABLE ranking model version")
        return version

    def _refresh_failed(self, err: ModelServerError) -> None:
        self._version = None  # gone from the server (or the server is down): degrade, do not call it
        _log.warning("ranking model refresh failed: %s: %s", err.code.name, err.message)
