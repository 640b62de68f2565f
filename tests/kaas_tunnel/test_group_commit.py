"""Group commit (``kaas_tunnel.group_commit``): what arrives while a batch is written goes together in the
next one, in order; a failing batch is written again item by item so that only the bad item fails."""

from __future__ import annotations

import asyncio
import threading

import pytest

from kaas_tunnel.group_commit import GroupCommit


class Recorder:
    """A flush that records its batches and can be held, so a test decides what arrives meanwhile."""

    def __init__(self, *, bad: frozenset[int] = frozenset()) -> None:
        self.batches: list[list[int]] = []
        self.bad = bad
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.entered.set()
        self.release.wait(timeout=10)
        if self.bad & set(items):
            raise ValueError(f"bad item among {items}")
        return [item * 10 for item in items]


async def test_a_lone_submission_is_written_at_once_in_a_batch_of_its_own() -> None:
    flush = Recorder()
    commit = GroupCommit(flush, name="test")
    assert await commit.submit(1) == 10
    assert flush.batches == [[1]]


async def test_submissions_made_while_a_batch_is_written_go_together_in_the_next_one_in_order() -> None:
    flush = Recorder()
    flush.release.clear()
    commit = GroupCommit(flush, name="test", max_batch=3)
    first = asyncio.create_task(commit.submit(1))
    await asyncio.to_thread(flush.entered.wait, 10)  # batch [1] is being written, and held
    rest = [asyncio.create_task(commit.submit(n)) for n in range(2, 7)]
    await asyncio.sleep(0)  # every submission is queued before the held batch ends
    flush.release.set()
    assert await asyncio.gather(first, *rest) == [10, 20, 30, 40, 50, 60]
    assert flush.batches == [[1], [2, 3, 4], [5, 6]]
    assert (commit.batches, commit.items) == (3, 6)


async def test_a_failing_batch_is_written_again_one_by_one_and_only_the_bad_item_fails() -> None:
    flush = Recorder(bad=frozenset({3}))
    flush.release.clear()
    commit = GroupCommit(flush, name="test")
    first = asyncio.create_task(commit.submit(1))
    await asyncio.to_thread(flush.entered.wait, 10)
    rest = [asyncio.create_task(commit.submit(n)) for n in (2, 3, 4)]
    await asyncio.sleep(0)
    flush.release.set()
    results = await asyncio.gather(first, *rest, return_exceptions=True)
    assert results[:2] == [10, 20]
    assert isinstance(results[2], ValueError)
    assert results[3] == 40
    assert flush.batches == [[1], [2, 3, 4], [2], [3], [4]]


async def test_a_cancelled_submitter_does_not_stop_the_others_or_the_write() -> None:
    flush = Recorder()
    flush.release.clear()
    commit = GroupCommit(flush, name="test")
    first = asyncio.create_task(commit.submit(1))
    await asyncio.to_thread(flush.entered.wait, 10)
    gone = asyncio.create_task(commit.submit(2))
    kept = asyncio.create_task(commit.submit(3))
    await asyncio.sleep(0)
    gone.cancel()
    flush.release.set()
    assert await first == 10
    assert await kept == 30
    with pytest.raises(asyncio.CancelledError):
        await gone
    await commit.drain()
    assert flush.batches == [[1], [2, 3]]
