"""Group commit: the database work of many concurrent agent handshakes done in one transaction.

Owned by ``kaas_tunnel``; ``kaas_tunnel.server`` submits each handshake's token check and each
``cluster_agents`` change here instead of opening a transaction of its own. Why: after a tunnel server
restarts, thousands of agents dial within seconds, and each dial cost three transactions (token and
admission, the session's row, its first status report), each in a worker thread of its own. The database
round trips, the thread hops and the ORM's per-transaction work, not the rows, were most of a handshake's
price, and the herd paid it thousands of times at once. Here a submission waits only for the batch that is
being written to finish: the first one after a quiet moment goes at once, and whatever arrived meanwhile
goes together in the next batch, in one thread hop and one commit. Under no load nothing waits longer than
before; under a herd the number of transactions falls with the batch size.

A batch that fails is tried again item by item, so one bad item (a cluster deleted meanwhile) fails alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")


class GroupCommit(Generic[Item, Result]):
    """``await submit(item)`` runs ``flush([...items])`` in a worker thread together with every item
    submitted while the previous flush ran (at most ``max_batch`` at once), in submission order.

    ``flush`` returns one result per item, in order; its exception is the exception of every item of the
    batch when the batch had one item (the batch is retried item by item otherwise).
    """

    def __init__(self, flush: Callable[[list[Item]], Sequence[Result]], *, name: str, max_batch: int = 200):
        self._flush = flush
        self.name = name
        self.max_batch = max_batch
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._runner: asyncio.Task[None] | None = None
        self.batches = 0  # flushes done, for tests and metrics
        self.items = 0

    async def submit(self, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run(), name=f"group-commit-{self.name}")
        return await future

    async def drain(self) -> None:
        """Wait until everything submitted so far is written (a graceful stop calls it)."""
        while self._runner is not None and not self._runner.done():
            await asyncio.shield(self._runner)

    async def _run(self) -> None:
        while self._pending:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            await self._write(batch)

    async def _write(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        items = [item for item, _ in batch]
        try:
            results = await asyncio.to_thread(self._flush, items)
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], exc=exc)
                return
            logger.warning(
                "group commit %s: a batch of %d failed (%s); writing its items one by one",
                self.name,
                len(batch),
                type(exc).__name__,
            )
            for one in batch:
                await self._write([one])
            return
        self.batches += 1
        self.items += len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result=result)


def _settle(
    future: asyncio.Future[Result], *, result: Result | None = None, exc: BaseException | None = None
) -> None:
    if future.done():  # its submitter was cancelled: the work is done all the same
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)  # type: ignore[arg-type]
