"""Micro-batching for the service: many small requests, one forward pass.

    request 1 ─┐                                                         ┌─> future 1
    request 2 ─┼─> queue ─> worker: gather ─> fn(all texts), model thread ─┼─> future 2
    request 3 ─┘            (a few ms, up to max_batch texts)               └─> future 3

A lone request waits at most `max_wait` for company; when requests are already queued (the
model was busy), the worker takes them at once. While one batch runs in the model thread, the
next one fills up, so the batch size, and the throughput, grow with the load.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Any, Callable, Sequence

Job = tuple[Sequence[Any], asyncio.Future]


class ServiceClosing(RuntimeError):
    """Raised to requests that arrive after shutdown began."""


class MicroBatcher:
    def __init__(self, fn: Callable[[list[Any]], Sequence[Any]], executor: Executor,
                 max_batch: int = 64, max_wait: float = 0.005):
        self.fn = fn  # list of items -> one result per item, called in the executor
        self.executor = executor
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.batches = 0  # forward passes run
        self.items = 0  # items predicted
        self.largest = 0  # largest batch so far
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._held: Job | None = None  # a job that did not fit in the last batch
        self._worker: asyncio.Task | None = None
        self._closing = False

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run())

    async def submit(self, items: Sequence[Any]) -> list[Any]:
        """Results for `items`, computed together with whatever else is queued."""
        if self._closing:
            raise ServiceClosing("the service is shutting down")
        if not items:
            return []
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((items, future))
        return await future

    async def close(self) -> None:
        """Refuse new work, finish every queued job, stop the worker."""
        self._closing = True
        await self._queue.join()
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass

    async def _gather(self) -> list[Job]:
        first = self._held or await self._queue.get()
        self._held = None
        jobs, size = [first], len(first[0])
        loop = asyncio.get_running_loop()
        # Busy model (work already waiting): go now. Idle model: wait briefly for company.
        deadline = loop.time() + (0.0 if not self._queue.empty() else self.max_wait)
        while size < self.max_batch:
            while size < self.max_batch and not self._queue.empty():
                job = self._queue.get_nowait()
                if size + len(job[0]) > self.max_batch:
                    self._held = job
                    return jobs
                jobs.append(job)
                size += len(job[0])
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.sleep(min(remaining, 0.001))
        return jobs

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._gather()
            flat = [item for items, _ in jobs for item in items]
            try:
                results = await loop.run_in_executor(self.executor, self.fn, flat)
            except Exception as exc:  # handed to every waiting request
                for _, future in jobs:
                    if not future.done():
                        future.set_exception(exc)
            else:
                self.batches += 1
                self.items += len(flat)
                self.largest = max(self.largest, len(flat))
                start = 0
                for items, future in jobs:
                    if not future.done():  # the client may have gone away
                        future.set_result(list(results[start: start + len(items)]))
                    start += len(items)
            for _ in jobs:
                self._queue.task_done()
