"""Dynamic batching across concurrent requests (TF Serving's BasicBatchScheduler semantics).

Requests for the same (servable, signature) are queued; ``num_batch_threads`` workers each take the
oldest request, then merge following requests with the same key until ``max_batch_size`` rows or
``batch_timeout_micros`` after the first request's arrival, run one model call on the concatenated
rows and split the outputs back. As in TF Serving's shared batch scheduler, each key has at most one
open batch: while one worker fills it, the other workers wait (or run closed batches), so two idle
workers never split the arrivals of one key into two half-size batches. The queue holds at most ``max_enqueued_batches * max_batch_size``
rows: a request that does not fit is refused at once with UNAVAILABLE (HTTP 503), never parked.
A request of more rows than ``max_batch_size`` is refused with INVALID_ARGUMENT (TF's batch
scheduler: "Task size N is larger than maximum input batch size M"); with
``enable_large_batch_splitting`` it is split into batches of at most ``max_execution_batch_size``
rows, as TF Serving's ``BatchingParameters`` define both. Requests are validated by the front ends
before they are queued (``tensors.py``); if a merged batch still fails, each request is rerun alone,
so a bad one never fails its batch-mates.
Without batching, ``Direct`` runs each request on a thread pool with the same bound, and refuses
requests of more than ``max_rows`` rows the same way.

``submit(..., loop=None)`` returns a ``concurrent.futures.Future``; with ``loop=`` (an asyncio event
loop, e.g. the REST front end's) it returns an ``asyncio.Future`` of that loop, and a batch wakes
the loop once for all of its requests instead of once per request (one ``call_soon_threadsafe``
per batch, measured in docs/results.md, "Serving throughput and limits").
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
import time

import numpy as np
from grpc import StatusCode

from .errors import ServingError
from .tensors import check_rows

logger = logging.getLogger(__name__)


class _Task:
    __slots__ = ("servable", "signature", "inputs", "rows", "future", "t0", "loop")

    def __init__(self, servable, signature, inputs, rows, loop=None):
        self.servable, self.signature, self.inputs, self.rows = servable, signature, inputs, rows
        self.loop = loop
        self.future = concurrent.futures.Future() if loop is None else loop.create_future()
        self.t0 = time.monotonic()

    @property
    def key(self):
        return (id(self.servable), self.signature)


def _rows(inputs):
    first = next(iter(inputs.values()))
    return int(np.shape(first)[0]) if np.ndim(first) else 1


class Batcher:
    """Thread-based dynamic batcher; ``submit`` returns a ``concurrent.futures.Future``."""

    def __init__(self, settings):
        self.s = settings
        self.max_rows = settings.max_batch_size
        self.exec_rows = (settings.max_execution_batch_size or settings.max_batch_size
                          if settings.enable_large_batch_splitting else settings.max_batch_size)
        self.capacity = settings.max_enqueued_batches * settings.max_batch_size
        self._queue = collections.deque()
        self._rows = 0
        lock = threading.Lock()
        self._cv = threading.Condition(lock)             # idle workers wait here for a task to open a batch
        self._fill_cv = threading.Condition(lock)        # a worker filling a batch waits here
        self._open = {}           # key -> rows of the batch a worker is filling (one open batch per key)
        self._key_rows = collections.Counter()           # key -> rows queued
        self._stop = False
        self._idle = 0            # workers waiting for a task whose key has no open batch
        self.batches = 0
        self._threads = [threading.Thread(target=self._work, daemon=True, name=f"batch-{i}")
                         for i in range(settings.num_batch_threads)]
        for t in self._threads:
            t.start()

    def submit(self, servable, signature, inputs, loop=None):
        rows = _rows(inputs)
        check_rows(rows, self.max_rows)
        if rows > self.exec_rows:
            return self._submit_split(servable, signature, inputs, rows, loop)
        task = _Task(servable, signature, inputs, rows, loop)
        self._enqueue([task])
        return task.future

    def _enqueue(self, tasks):
        rows = sum(t.rows for t in tasks)
        with self._cv:
            if self._stop or self._rows + rows > self.capacity and self._queue:
                raise ServingError(StatusCode.UNAVAILABLE, "The batch scheduling queue to which this task was "
                                   "submitted is full")
            self._queue.extend(tasks)
            self._rows += rows
            key = tasks[0].key                   # the tasks of one call share a key
            self._key_rows[key] += rows
            # wake a worker only when a batch can be opened (an idle worker, no open batch of this
            # key) or the open batch can be closed early (full); a worker filling a batch wakes by
            # itself at its deadline. One futex wake per request was a measurable share of the
            # event loop's CPU (docs/results.md, serving throughput).
            if key in self._open:
                if self._open[key] + self._key_rows[key] >= self.exec_rows:
                    self._fill_cv.notify_all()
            elif self._idle:
                self._cv.notify(len(tasks))

    def _submit_split(self, servable, signature, inputs, rows, loop):
        """Large-batch splitting: chunks of ``exec_rows`` rows, answers concatenated in order."""
        parts = [_Task(servable, signature, {k: v[i:i + self.exec_rows] for k, v in inputs.items()},
                       min(self.exec_rows, rows - i)) for i in range(0, rows, self.exec_rows)]
        whole = concurrent.futures.Future() if loop is None else loop.create_future()
        left = [len(parts)]
        lock = threading.Lock()

        def done(_):
            with lock:
                left[0] -= 1
                if left[0]:
                    return
            errors = [p.future.exception() for p in parts if p.future.exception() is not None]
            if errors:
                outcome = (False, errors[0])
            else:
                outs = [p.future.result() for p in parts]
                outcome = (True, {k: np.concatenate([o[k] for o in outs]) if np.ndim(outs[0][k]) else outs[0][k]
                                  for k in outs[0]})
            if loop is None:
                _settle(whole, *outcome)
            else:
                try:
                    loop.call_soon_threadsafe(_settle, whole, *outcome)
                except RuntimeError:  # pragma: no cover - loop closed during shutdown
                    pass
        self._enqueue(parts)
        for p in parts:
            p.future.add_done_callback(done)
        return whole

    def _take(self):
        """Oldest task whose key has no open batch, plus same-key followers, waiting up to the
        timeout for more rows."""
        with self._cv:
            while True:
                first = next((t for t in self._queue if t.key not in self._open), None)
                if first is not None or (self._stop and not self._queue):
                    break
                self._idle += 1
                try:
                    self._cv.wait(0.5)
                finally:
                    self._idle -= 1
            if first is None:
                return None
            key = first.key
            self._queue.remove(first)
            batch, rows = [first], first.rows
            self._key_rows[key] -= first.rows
            self._open[key] = rows
            deadline = first.t0 + self.s.batch_timeout_micros / 1e6
            try:
                while rows < self.exec_rows:
                    if self._key_rows[key]:
                        for t in list(self._queue):
                            if t.key == key and rows + t.rows <= self.exec_rows:
                                self._queue.remove(t)
                                batch.append(t)
                                rows += t.rows
                                self._key_rows[key] -= t.rows
                        self._open[key] = rows
                    remaining = deadline - time.monotonic()
                    if rows >= self.exec_rows or remaining <= 0 or self._stop:
                        break
                    self._fill_cv.wait(remaining)
            finally:
                del self._open[key]
                if not self._key_rows[key]:
                    del self._key_rows[key]
                self._rows -= rows
                if self._idle and self._queue:      # tasks left over: the next batch can open now
                    self._cv.notify()
            return batch

    def _work(self):
        while True:
            batch = self._take()
            if batch is None:
                return
            self.batches += 1
            run_batch(batch)

    def close(self):
        with self._cv:
            self._stop = True
            self._cv.notify_all()
            self._fill_cv.notify_all()
        for t in self._threads:
            t.join(timeout=5)


def _settle(fut, ok, value):
    if fut.done():          # asyncio future cancelled (client went away)
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


def _deliver_on_loop(items):
    for fut, ok, value in items:
        _settle(fut, ok, value)


def _deliver(tasks, outcomes):
    """Set each task's future: concurrent futures here, asyncio futures with one loop wake-up per
    loop for the whole batch."""
    by_loop = {}
    for t, (ok, value) in zip(tasks, outcomes):
        if t.loop is None:
            _settle(t.future, ok, value)
        else:
            by_loop.setdefault(t.loop, []).append((t.future, ok, value))
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_deliver_on_loop, items)
        except RuntimeError:  # pragma: no cover - loop closed during shutdown
            pass


def _outcome(task):
    try:
        return True, task.servable.run(task.signature, task.inputs)
    except ServingError as exc:
        return False, exc
    except Exception:  # pragma: no cover - unexpected model failure: logged, not sent to the client
        logger.exception("model %s version %s, signature %s failed", task.servable.name,
                         task.servable.version, task.signature)
        return False, ServingError(StatusCode.INTERNAL, "Internal error while running the model; see the server log")


def run_batch(batch):
    head = batch[0]
    if len(batch) == 1:
        _deliver(batch, [_outcome(head)])
        return
    try:
        merged = {k: np.concatenate([np.asarray(t.inputs[k]) for t in batch]) for k in head.inputs}
        out = head.servable.run(head.signature, merged)
    except Exception:
        # one bad request must not fail its batch-mates (a value the graph refuses, or inputs that
        # do not concatenate): rerun each alone, so each gets its own answer
        _deliver(batch, [_outcome(t) for t in batch])
        return
    outcomes, start = [], 0
    for t in batch:
        outcomes.append((True, {k: v[start:start + t.rows] if np.ndim(v) else v for k, v in out.items()}))
        start += t.rows
    _deliver(batch, outcomes)


def _run_alone(task):
    _deliver([task], [_outcome(task)])


class Direct:
    """No batching: one model call per request on a bounded thread pool."""

    def __init__(self, threads=4, max_pending=256, max_rows=None):
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="predict")
        self._pending = 0
        self._max = max_pending
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self.batches = 0

    def submit(self, servable, signature, inputs, loop=None):
        check_rows(_rows(inputs), self.max_rows)
        with self._lock:
            if self._pending >= self._max:
                raise ServingError(StatusCode.UNAVAILABLE, "too many pending requests")
            self._pending += 1
        task = _Task(servable, signature, inputs, 0, loop)

        def go():
            try:
                _run_alone(task)
            finally:
                with self._lock:
                    self._pending -= 1
        self._pool.submit(go)
        return task.future

    def close(self):
        self._pool.shutdown(wait=False)
