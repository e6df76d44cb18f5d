"""The processor's unacknowledged sends (processors/pending.py): acknowledged sends are
dropped as they complete, so a quiet worker holds nothing between checkpoints; a
checkpoint still waits for what is in flight and fails on any failed send."""

from __future__ import annotations

import asyncio

import pytest

from processors.pending import PendingSends


def run(coro):
    return asyncio.run(coro)


def test_acknowledged_sends_are_not_kept_until_the_next_checkpoint():
    async def scenario():
        loop = asyncio.get_running_loop()
        pending = PendingSends()
        futures = []
        for i in range(10_000):  # a quiet worker's alerts and timer events between checkpoints
            fut = loop.create_future()
            pending.add(fut)
            futures.append(fut)
            fut.set_result(i)
        await asyncio.sleep(0)  # done callbacks run on the next loop turn
        held = len(pending)
        still_open = loop.create_future()
        pending.add(still_open)
        return held, len(pending), len(pending._in_flight)

    assert run(scenario()) == (0, 1, 1)


def test_a_send_already_acknowledged_when_added_is_not_kept():
    async def scenario():
        pending = PendingSends()
        fut = asyncio.get_running_loop().create_future()
        fut.set_result("acked")
        pending.add(fut)
        return len(pending)

    assert run(scenario()) == 0


def test_settle_waits_for_sends_in_flight():
    async def scenario():
        loop = asyncio.get_running_loop()
        pending = PendingSends()
        fut = loop.create_future()
        pending.add(fut)
        loop.call_later(0.05, fut.set_result, "acked")
        await pending.settle()
        return fut.done(), len(pending)

    assert run(scenario()) == (True, 0)


def test_a_failed_send_fails_the_next_settle_only():
    async def scenario():
        loop = asyncio.get_running_loop()
        pending = PendingSends()
        failed, ok = loop.create_future(), loop.create_future()
        pending.add(failed)
        pending.add(ok)
        failed.set_exception(ConnectionError("broker gone"))
        ok.set_result("acked")
        await asyncio.sleep(0)
        assert len(pending) == 1  # the failure is kept, the success is not
        with pytest.raises(ConnectionError, match="broker gone"):
            await pending.settle()
        await pending.settle()  # reported once: the next checkpoint is not blamed for it
        return len(pending)

    assert run(scenario()) == 0


def test_a_send_failing_while_settle_waits_fails_that_settle():
    async def scenario():
        loop = asyncio.get_running_loop()
        pending = PendingSends()
        fut = loop.create_future()
        pending.add(fut)
        loop.call_later(0.05, fut.set_exception, TimeoutError("no ack"))
        with pytest.raises(TimeoutError):
            await pending.settle()
        await pending.settle()
        return len(pending)

    assert run(scenario()) == 0


def test_a_cancelled_send_counts_as_failed():
    async def scenario():
        pending = PendingSends()
        fut = asyncio.get_running_loop().create_future()
        pending.add(fut)
        fut.cancel()
        await asyncio.sleep(0)
        with pytest.raises(asyncio.CancelledError):
            await pending.settle()

    run(scenario())
