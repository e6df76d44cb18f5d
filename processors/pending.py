"""Sends the broker has not acknowledged yet: what a checkpoint waits for before it
acknowledges the offsets it covers.

Only sends still in flight are kept, and the first failure: a send the broker
acknowledged is dropped as soon as it completes, so a quiet worker holds no
finished futures until its next checkpoint. ``settle`` then waits for what is
still in flight and raises the first failure since the last ``settle``.

>>> import asyncio
>>> async def demo():
...     loop = asyncio.get_running_loop()
...     pending = PendingSends()
...     sent, slow = loop.create_future(), loop.create_future()
...     pending.add(sent); pending.add(slow)
...     sent.set_result("acked"); await asyncio.sleep(0)
...     in_flight = len(pending)  # the acknowledged one is gone already
...     slow.set_result("acked"); await pending.settle()
...     failed = loop.create_future(); pending.add(failed)
...     failed.set_exception(RuntimeError("broker said no")); await asyncio.sleep(0)
...     try:
...         await pending.settle()
...     except RuntimeError as exc:
...         return in_flight, len(pending), str(exc)
>>> asyncio.run(demo())
(1, 0, 'broker said no')
"""

from __future__ import annotations

import asyncio


class PendingSends:
    """The delivery futures of sends not yet acknowledged, and the first failure."""

    def __init__(self) -> None:
        self._in_flight: set[asyncio.Future] = set()
        self._failed: asyncio.Future | None = None

    def add(self, fut: asyncio.Future) -> None:
        if fut.done():
            self._settled(fut)
        else:
            self._in_flight.add(fut)
            fut.add_done_callback(self._settled)

    def _settled(self, fut: asyncio.Future) -> None:
        self._in_flight.discard(fut)
        # .exception() also marks the failure as seen (no "never retrieved" warning)
        if (fut.cancelled() or fut.exception() is not None) and self._failed is None:
            self._failed = fut

    def __len__(self) -> int:
        return len(self._in_flight) + (self._failed is not None)

    async def settle(self) -> None:
        """Wait until every send added so far is acknowledged; raise the first failure
        (cancellation included) among them. Either way they are forgotten."""
        in_flight, failed = self._in_flight, self._failed
        self._in_flight, self._failed = set(), None
        for fut in in_flight:  # a later failure of these is reported here, not at the next settle
            fut.remove_done_callback(self._settled)
        outcomes = await asyncio.gather(*in_flight, return_exceptions=True) if in_flight else []
        if failed is not None:
            failed.result()  # raises
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
