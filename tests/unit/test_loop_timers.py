"""netns.loop's timers (the one loop of burrow-dns and the forwarder), on a real epoll.

The loop reads the clock once per wakeup and walks its timer FIFOs only when one is due (or
after PRUNE_AFTER cancellations): these check that the walk still runs what is due, in the
order the loop promises, and still drops cancelled timers.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator

import pytest

from netns.loop import PRUNE_AFTER, Loop


@pytest.fixture
def loop() -> Iterator[Loop]:
    lp = Loop()
    # A watchdog: a loop that never returns fails the test instead of hanging the suite.
    dog = threading.Timer(20.0, lambda: (lp.stop(), os.write(lp._wake_w, b"\0")))  # noqa: SLF001
    dog.start()
    yield lp
    dog.cancel()


def run_two_ready_events(loop: Loop, seen: list[str], on_first: Callable[[], object]) -> None:
    """Runs `loop` with two pipes readable at once (one poll's batch of two events): each
    handler appends its name to `seen`, and the first of them calls `on_first`."""
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    os.write(w1, b"x")
    os.write(w2, b"x")

    def handler(name: str, fd: int) -> None:
        os.read(fd, 1)
        seen.append(name)
        if len(seen) == 1:
            on_first()

    loop.add(r1, lambda ev: handler("first", r1))
    loop.add(r2, lambda ev: handler("second", r2))
    try:
        loop.run()
    finally:
        for fd in (r1, w1, r2, w2):
            os.close(fd)


def test_a_zero_delay_timer_runs_after_the_whole_batch(loop: Loop) -> None:
    """A timer set by a handler, even with delay 0, runs after every event of that poll's
    batch (the forwarder gives recycled sockets back then: a later event of the same batch
    may still belong to the old connection)."""
    seen: list[str] = []
    run_two_ready_events(loop, seen, lambda: loop.call_later(
        0.0, lambda: (seen.append("timer"), loop.stop())))
    assert seen[2:] == ["timer"] and sorted(seen[:2]) == ["first", "second"]


def test_a_cancelled_earlier_timer_does_not_hide_a_later_one(loop: Loop) -> None:
    """The next deadline may come from a timer cancelled since: its wakeup finds it cancelled
    and moves on to the next live one, which runs."""
    ran: list[str] = []
    loop.call_later(0.02, lambda: ran.append("cancelled")).cancel()
    loop.call_later(0.05, lambda: (ran.append("live"), loop.stop()))
    loop.run()
    assert ran == ["live"]


def test_a_timer_set_by_a_timer_runs(loop: Loop) -> None:
    ran: list[int] = []

    def again() -> None:
        ran.append(len(ran))
        if len(ran) < 3:
            loop.call_later(0.0 if len(ran) == 1 else 0.01, again)
        else:
            loop.stop()

    loop.call_later(0.01, again)
    loop.run()
    assert ran == [0, 1, 2]


def test_cancelled_timers_do_not_pile_up(loop: Loop) -> None:
    """A busy forwarder cancels most of its timers (answered queries' timeouts): they are
    dropped from the FIFOs within PRUNE_AFTER cancellations, not only when their deadline
    comes (here an hour away)."""
    for _ in range(4 * PRUNE_AFTER):
        loop.call_later(3600.0, lambda: None).cancel()
    loop.call_later(0.0, loop.stop)
    loop.run()
    assert not loop._timers[3600.0]  # noqa: SLF001 - the FIFO itself


def test_a_failing_timer_is_contained(loop: Loop) -> None:
    faults: list[BaseException] = []
    loop.on_error = faults.append

    def boom() -> None:
        raise RuntimeError("boom")

    loop.call_later(0.0, boom)
    loop.call_later(0.01, loop.stop)
    loop.run()
    assert len(faults) == 1 and loop.errors == 1


def test_soon_runs_after_the_whole_batch_and_before_the_next_wait(loop: Loop) -> None:
    """Loop.soon (the forwarder gives recycled sockets back with it): after every event of
    the batch that asked for it; and one asked for by a soon callback or a timer runs without
    waiting for another event (nothing else would ever wake this loop)."""
    seen: list[str] = []

    def first_soon() -> None:
        seen.append("soon")
        loop.soon(lambda: (seen.append("soon again"), loop.call_later(0.01, from_timer)))

    def from_timer() -> None:
        loop.soon(lambda: (seen.append("soon from a timer"), loop.stop()))

    run_two_ready_events(loop, seen, lambda: loop.soon(first_soon))
    assert sorted(seen[:2]) == ["first", "second"]
    assert seen[2:] == ["soon", "soon again", "soon from a timer"]
