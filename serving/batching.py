"""Server-side batching (``--enable_batching``): concurrent Predict requests run as one batch.

Requests for the same servable, signature and output filter whose inputs agree in everything but
the 0th (batch) dimension wait in one queue. The first waiting request leads: it waits up to
``batch_timeout_micros`` for the batch to reach ``max_batch_size`` rows, takes the requests that
fit (first come, first served), hands the lead to the next waiting request, runs the batch and
splits the outputs back by rows. At most ``num_batch_threads`` batches run at once. The checks
and messages are TF Serving's ``BatchingSession``'s. Batches are not padded to
``allowed_batch_sizes``.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Mapping, Sequence

import numpy as np

from serving.errors import Code, ModelServerError, invalid_argument
from serving.model_config import BatchingParameters
from serving.servable import PredictResult, Servable


@dataclasses.dataclass(eq=False)
class _Task:
    """One request waiting in a queue."""

    inputs: Mapping[str, np.ndarray]
    rows: int
    wakeup: threading.Event = dataclasses.field(default_factory=threading.Event)
    lead: bool = False
    finished: bool = False
    result: PredictResult | None = None
    error: ModelServerError | None = None


@dataclasses.dataclass(eq=False)
class _Queue:
    """Requests that can share a batch; ``has_leader`` is true while one of them leads.

    ``rows`` is the sum of the waiting tasks' rows.
    """

    condition: threading.Condition = dataclasses.field(default_factory=threading.Condition)
    tasks: list[_Task] = dataclasses.field(default_factory=list)
    rows: int = 0
    has_leader: bool = False


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


class BatchingPredictor:
    """A PredictFunction that merges concurrent requests into batches."""

    def __init__(self, parameters: BatchingParameters) -> None:
        self._parameters = parameters
        self._queues: dict[tuple, _Queue] = {}
        self._queues_lock = threading.Lock()
        self._batch_slots = threading.BoundedSemaphore(parameters.num_batch_threads)

    def __call__(
        self,
        servable: Servable,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str],
    ) -> PredictResult:
        """Runs the request as part of a batch and returns its own rows of the outputs.

        Raises:
            ModelServerError: The request cannot be batched, the queue is full, or the batch
                failed (every request in it gets the error).
        """
        rows = _batch_rows(inputs)
        if rows == 0:
            return servable.predict(signature_name, inputs, output_filter)
        max_batch_size = self._parameters.max_batch_size
        if rows > max_batch_size:
            raise invalid_argument(f"Task size {rows} is larger than maximum input batch size {max_batch_size}")
        shape_key = tuple(sorted((name, array.dtype.str, array.shape[1:]) for name, array in inputs.items()))
        key = (servable, signature_name, tuple(output_filter), shape_key)
        with self._queues_lock:
            queue = self._queues.setdefault(key, _Queue())
        task = _Task(inputs, rows)
        with queue.condition:
            if queue.rows + rows > self._parameters.max_enqueued_batches * max_batch_size:
                raise ModelServerError(
                    Code.UNAVAILABLE, "The batch scheduling queue to which this task was submitted is full"
                )
            queue.tasks.append(task)
            queue.rows += rows
            if queue.rows >= max_batch_size:  # the only thing the leader waits for, besides time
                queue.condition.notify_all()
            if not queue.has_leader:
                queue.has_leader = task.lead = True
        while not task.finished:
            if task.lead:
                task.lead = False
                self._lead(key, queue, servable, signature_name, output_filter)
            else:
                task.wakeup.wait()
                task.wakeup.clear()
        if task.error is not None:
            raise task.error
        assert task.result is not None
        return task.result

    def _lead(
        self,
        key: tuple,
        queue: _Queue,
        servable: Servable,
        signature_name: str,
        output_filter: Sequence[str],
    ) -> None:
        """Collects the next batch, passes the lead on, and runs the batch."""
        max_batch_size = self._parameters.max_batch_size
        deadline = time.monotonic() + self._parameters.batch_timeout_micros / 1e6
        with queue.condition:
            while queue.rows < max_batch_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                queue.condition.wait(remaining)
            batch: list[_Task] = []
            batch_rows = 0
            while queue.tasks and batch_rows + queue.tasks[0].rows <= max_batch_size:
                batch_rows += queue.tasks[0].rows
                batch.append(queue.tasks.pop(0))
            queue.rows -= batch_rows
            if queue.tasks:
                queue.tasks[0].lead = True
                queue.tasks[0].wakeup.set()
            else:
                queue.has_leader = False
                with self._queues_lock:
                    if self._queues.get(key) is queue:
                        del self._queues[key]
        with self._batch_slots:
            self._run(batch, batch_rows, servable, signature_name, output_filter)

    @staticmethod
    def _run(
        batch: list[_Task], batch_rows: int, servable: Servable, signature_name: str, output_filter: Sequence[str]
    ) -> None:
        """Runs one batch and gives every task its rows of the outputs, or the error."""
        try:
            names = list(batch[0].inputs)
            inputs = {name: np.concatenate([task.inputs[name] for task in batch]) for name in names}
            result = servable.predict(signature_name, inputs, output_filter)
            for name, output in result.outputs.items():
                if output.ndim == 0 or output.shape[0] != batch_rows:
                    raise ModelServerError(
                        Code.INTERNAL,
                        f"Batched output tensor {name} has 0th dimension "
                        f"{output.shape[0] if output.ndim else 'none'} which is not equal to the sum "
                        f"of the 0th dimension sizes of the input tensors {batch_rows}",
                    )
            offset = 0
            for task in batch:
                task.result = PredictResult(
                    {name: output[offset : offset + task.rows] for name, output in result.outputs.items()},
                    result.signature_name,
                )
                offset += task.rows
        except ModelServerError as err:
            for task in batch:
                task.error = err
        except BaseException as err:
            for task in batch:
                task.error = ModelServerError(Code.INTERNAL, f"Batch failed: {type(err).__name__}: {err}")
            raise
        finally:
            for task in batch:
                task.finished = True
                task.wakeup.set()
