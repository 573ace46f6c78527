"""How Predict runs a model: on the server's event loop, with or without server-side batching.

The gRPC API runs on one asyncio event loop (:class:`ServingLoop`, uvloop) rather than on a
thread per request: on this server's Python, a thread per request spends more time handing the
GIL around than answering (at 8 concurrent gRPC clients of the 5,000-item model on 2 cores, the
event loop answers 15-20% more requests per second at lower latency). A model runs on a thread
beside the loop, since a session call releases the GIL but blocks its thread. Two predictors:

* :class:`DirectPredictor` runs each request's model on its own (without ``--enable_batching``);
* :class:`BatchingPredictor` merges concurrent requests into batches (``--enable_batching``).

Both are awaited on the loop (``predict_async``) and called from any other thread (``predict``:
the REST API's worker threads), so REST and gRPC requests share batches.

Batching: requests for the same servable, signature and output filter whose inputs agree in
everything but the 0th (batch) dimension wait in one queue. A batch closes when it holds
``max_batch_size`` rows or ``batch_timeout_micros`` after its first request arrived, taking the
requests that fit (first come, first served); at most ``num_batch_threads`` batches run at once,
and the outputs are split back by rows. The checks and messages are TF Serving's
``BatchingSession``'s. Batches are not padded to ``allowed_batch_sizes``.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import logging
import threading
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np
import uvloop

from serving.errors import Code, ModelServerError, invalid_argument
from serving.model_config import BatchingParameters
from serving.servable import PredictResult, Servable

_log = logging.getLogger(__name__)
Result = TypeVar("Result")


class ServingLoop:
    """An asyncio event loop (uvloop) running in a thread of its own until ``close``."""

    def __init__(self, name: str = "serving-loop") -> None:
        self.loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, Result], timeout: float | None = None) -> Result:
        """Runs a coroutine on the loop from another thread and returns its result.

        Raises:
            RuntimeError: Called on the loop's own thread (it would wait for itself).
        """
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError("ServingLoop.run called on the loop's own thread")
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        """Stops the loop, waits for its thread and closes it."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class Predictor(Protocol):
    """Runs Predict on a servable for the APIs."""

    def predict(
        self, servable: Servable, signature_name: str, inputs: Mapping[str, np.ndarray], output_filter: Sequence[str]
    ) -> PredictResult:
        """From any thread but the serving loop's; blocks until the result is there."""

    async def predict_async(
        self, servable: Servable, signature_name: str, inputs: Mapping[str, np.ndarray], output_filter: Sequence[str]
    ) -> PredictResult:
        """On the serving loop."""

    def close(self) -> None:
        """Stops the predictor's threads (after the APIs stopped)."""


class DirectPredictor:
    """Runs every request on its own: on the calling thread, or on a pool beside the loop.

    Args:
        num_threads: Models that may run at once for requests from the loop.
    """

    def __init__(self, num_threads: int) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(num_threads, thread_name_prefix="predict")

    def predict(
        self, servable: Servable, signature_name: str, inputs: Mapping[str, np.ndarray], output_filter: Sequence[str]
    ) -> PredictResult:
        return servable.predict(signature_name, inputs, output_filter)

    async def predict_async(
        self, servable: Servable, signature_name: str, inputs: Mapping[str, np.ndarray], output_filter: Sequence[str]
    ) -> PredictResult:
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, servable.predict, signature_name, inputs, output_filter
        )

    def close(self) -> None:
        self._executor.shutdown()


def _batch_rows(inputs: Mapping[str, np.ndarray]) -> int:
    """Returns the common 0th dimension of the inputs.

    Raises:
        ModelServerError: INVALID_ARGUMENT for a scalar input or unequal 0th dimensions.
    """
    sizes = set()
    for array in inputs.values():
        if array.ndim == 0:
            raise invalid_argument("Batching Run() input tensors must have at least one dimension")
        sizes.add(array.shape[0])
    if len(sizes) > 1:
        raise invalid_argument("Batching Run() input tensors must have equal 0th-dimension size")
    return sizes.pop() if sizes else 0


@dataclasses.dataclass(eq=False)
class _Task:
    """One request waiting for its batch; ``future`` gets its rows of the outputs."""

    inputs: Mapping[str, np.ndarray]
    rows: int
    future: asyncio.Future


@dataclasses.dataclass(frozen=True, eq=False)
class _Batch:
    """Requests that run together."""

    servable: Servable
    signature_name: str
    output_filter: tuple[str, ...]
    tasks: list[_Task]
    rows: int


@dataclasses.dataclass(eq=False)
class _Queue:
    """The requests of one batching key that are not running yet.

    ``open_tasks`` fill the next batch (its timer runs from its first request); ``rows`` counts
    them and the rows of this key's closed batches still waiting for a batch thread.
    """

    open_tasks: collections.deque[_Task] = dataclasses.field(default_factory=collections.deque)
    open_rows: int = 0
    rows: int = 0
    timer: asyncio.TimerHandle | None = None


class BatchingPredictor:
    """Merges concurrent requests into batches; lives on the serving loop."""

    def __init__(self, parameters: BatchingParameters, serving_loop: ServingLoop) -> None:
        self._parameters = parameters
        self._serving_loop = serving_loop
        self._executor = concurrent.futures.ThreadPoolExecutor(parameters.num_batch_threads, thread_name_prefix="batch")
        self._queues: dict[tuple, _Queue] = {}
        self._ready: collections.deque[tuple[tuple, _Batch]] = collections.deque()  # closed, waiting for a thread
        self._running = 0

    def predict(
        self, servable: Servable, signature_name: str, inputs: Mapping[str, np.ndarray], output_filter: Sequence[str]
    ) -> PredictResult:
        return self._serving_loop.run(self.predict_async(servable, signature_name, inputs, output_filter))

    async def predict_async(
        self, servable: Servable, signature_name: str, inputs: Mapping[str, np.ndarray], output_filter: Sequence[str]
    ) -> PredictResult:
        """Runs the request as part of a batch and returns its own rows of the outputs.

        Raises:
            ModelServerError: The request cannot be batched, the queue is full, or the batch
                failed (every request in it gets the error).
        """
        rows = _batch_rows(inputs)
        loop = asyncio.get_running_loop()
        if rows == 0:
            return await loop.run_in_executor(self._executor, servable.predict, signature_name, inputs, output_filter)
        max_batch_size = self._parameters.max_batch_size
        if rows > max_batch_size:
            raise invalid_argument(f"Task size {rows} is larger than maximum input batch size {max_batch_size}")
        shape_key = tuple(sorted((name, array.dtype.str, array.shape[1:]) for name, array in inputs.items()))
        key = (servable, signature_name, tuple(output_filter), shape_key)
        queue = self._queues.setdefault(key, _Queue())
        if queue.rows + rows > self._parameters.max_enqueued_batches * max_batch_size:
            raise ModelServerError(
                Code.UNAVAILABLE, "The batch scheduling queue to which this task was submitted is full"
            )
        task = _Task(inputs, rows, loop.create_future())
        queue.open_tasks.append(task)
        queue.open_rows += rows
        queue.rows += rows
        if queue.open_rows >= max_batch_size:
            self._close_batch(key)
        elif queue.timer is None:
            queue.timer = loop.call_later(self._parameters.batch_timeout_micros / 1e6, self._close_batch, key)
        return await task.future

    def _close_batch(self, key: tuple) -> None:
        """Takes the open requests that fit into one batch and queues it to run."""
        queue = self._queues.get(key)
        if queue is None:
            return
        if queue.timer is not None:
            queue.timer.cancel()
            queue.timer = None
        if not queue.open_tasks:  # a close scheduled for a batch that closed meanwhile
            return
        tasks: list[_Task] = []
        rows = 0
        while queue.open_tasks and rows + queue.open_tasks[0].rows <= self._parameters.max_batch_size:
            task = queue.open_tasks.popleft()
            tasks.append(task)
            rows += task.rows
        queue.open_rows -= rows
        if queue.open_tasks:  # the next batch starts now
            if queue.open_rows >= self._parameters.max_batch_size:
                self._serving_loop.loop.call_soon(self._close_batch, key)
            else:
                queue.timer = self._serving_loop.loop.call_later(
                    self._parameters.batch_timeout_micros / 1e6, self._close_batch, key
                )
        servable, signature_name, output_filter, _ = key
        self._ready.append((key, _Batch(servable, signature_name, output_filter, tasks, rows)))
        self._start_batches()

    def _start_batches(self) -> None:
        """Starts waiting batches while batch threads are free."""
        while self._ready and self._running < self._parameters.num_batch_threads:
            key, batch = self._ready.popleft()
            queue = self._queues[key]
            queue.rows -= batch.rows
            if queue.rows == 0:
                del self._queues[key]
            self._running += 1
            running = self._serving_loop.loop.run_in_executor(self._executor, _run_batch, batch)
            running.add_done_callback(lambda done, batch=batch: self._finish(batch, done))

    def _finish(self, batch: _Batch, done: asyncio.Future) -> None:
        """Hands every request its rows of the outputs, or the batch's error."""
        self._running -= 1
        error = done.exception()
        if error is not None and not isinstance(error, ModelServerError):
            _log.error("Batch of %d rows failed", batch.rows, exc_info=error)
            error = ModelServerError(Code.INTERNAL, f"Batch failed: {type(error).__name__}: {error}")
        results = None if error is not None else done.result()
        for index, task in enumerate(batch.tasks):
            if task.future.done():  # the request was cancelled meanwhile
                continue
            if error is not None:
                task.future.set_exception(error)
            else:
                task.future.set_result(results[index])
        self._start_batches()

    def close(self) -> None:
        self._executor.shutdown()


def _run_batch(batch: _Batch) -> list[PredictResult]:
    """Runs one batch (on a batch thread) and returns every request's rows of the outputs.

    Raises:
        ModelServerError: The model failed, or an output's 0th dimension is not the batch's.
    """
    names = list(batch.tasks[0].inputs)
    inputs = {name: np.concatenate([task.inputs[name] for task in batch.tasks]) for name in names}
    result = batch.servable.predict(batch.signature_name, inputs, batch.output_filter)
    for name, output in result.outputs.items():
        if output.ndim == 0 or output.shape[0] != batch.rows:
            raise ModelServerError(
                Code.INTERNAL,
                f"Batched output tensor {name} has 0th dimension "
                f"{output.shape[0] if output.ndim else 'none'} which is not equal to the sum "
                f"of the 0th dimension sizes of the input tensors {batch.rows}",
            )
    results = []
    offset = 0
    for task in batch.tasks:
        results.append(PredictResult(
            {name: output[offset : offset + task.rows] for name, output in result.outputs.items()},
            result.signature_name,
        ))
        offset += task.rows
    return results
