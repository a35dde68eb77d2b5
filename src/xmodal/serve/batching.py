"""Micro-batching: concurrent requests encoded and searched together, off the event loop.

A model call on 32 queries costs little more than on one, so the worker takes every request
queued while the previous batch ran (plus those arriving within `max_wait_s`), hands them to
`fn` in one call on the model thread, and answers each request's future.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Generic, TypeVar

Q = TypeVar("Q")
R = TypeVar("R")


class MicroBatcher(Generic[Q, R]):
    """`await submit(item)` -> `fn([..., item, ...])[i]`; `fn` runs in `executor`."""

    def __init__(
        self,
        fn: Callable[[Sequence[Q]], Sequence[R]],
        executor: Executor,
        max_batch: int = 32,
        max_wait_s: float = 0.002,
    ) -> None:
        self.fn, self.executor = fn, executor
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self._queue: asyncio.Queue[tuple[Q, asyncio.Future[R]]] | None = None
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # batches run so far (for tests and stats)

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def submit(self, item: Q) -> R:
        if self._queue is None or self._task is None:
            raise RuntimeError("the batcher is not running")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def _collect(self) -> list[tuple[Q, asyncio.Future[R]]]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), left))
            except TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            live = [(item, fut) for item, fut in batch if not fut.done()]  # clients gone
            if not live:
                continue
            try:
                results = await loop.run_in_executor(
                    self.executor, self.fn, [item for item, _ in live]
                )
            except Exception as e:  # every waiting request gets the error, the loop lives on
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            finally:
                self.batches += 1
            for (_, fut), result in zip(live, results, strict=True):
                if not fut.done():
                    fut.set_result(result)
