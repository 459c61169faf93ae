"""A tiny epoll loop: fd callbacks, timers and signals, nothing else.

Why not asyncio: importing asyncio costs ~30 ms here, which would double the time from start
to first answer (benchmarked), and spec §3.2 measured a plain socket loop as fast as uvloop
for the fast path. Everything runs on one thread, so a reload (a signal, dispatched from the
loop, never from inside a handler) can never interleave with a query.

A handler or timer that raises is a fault in serving one peer, never a reason to stop serving
all of them: the loop hands the exception to `on_error` (which logs and counts it) and goes on.
The try costs nothing per event until something raises (zero-cost exceptions, Python 3.11).
"""

from __future__ import annotations

import logging
import os
import select
import signal
import time
from collections import deque
from collections.abc import Callable
from types import FrameType

IN = select.EPOLLIN
OUT = select.EPOLLOUT
INF = float("inf")
# Cancelled timers wait in their FIFOs until a walk drops them: one every this many
# cancellations at least, so a busy DNS forwarder's answered queries' timeouts do not pile up.
PRUNE_AFTER = 256
ERROR_LOG_EVERY = 10.0  # seconds between two log lines about handler faults (they are counted)

log = logging.getLogger("netns.loop")


class Timer:
    __slots__ = ("when", "callback", "cancelled", "loop")

    def __init__(self, when: float, callback: Callable[[], None],
                 loop: Loop | None = None) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False
        self.loop = loop

    def cancel(self) -> None:
        if not self.cancelled and self.loop is not None:
            self.loop.stale += 1
        self.cancelled = True
        # Drop the callback now: it usually closes over an object that holds this timer, and
        # that cycle would otherwise live on until the cyclic GC (a latency spike) finds it.
        self.callback = _noop


def _noop() -> None:
    pass


def _ignore(signum: int, frame: FrameType | None) -> None:
    """The real work happens in the loop, woken through the wakeup fd."""


class Loop:
    def __init__(self, on_error: Callable[[BaseException], None] | None = None) -> None:
        self.on_error = on_error or self._log_error
        self.errors = 0  # handler and timer faults contained so far
        self._last_error_log = -ERROR_LOG_EVERY
        self._ep = select.epoll()
        self._handlers: dict[int, Callable[[int], None]] = {}
        self._timers: dict[float, deque[Timer]] = {}
        # No timer is due before this (a cancelled one may set it: one early wakeup at most),
        # so a wakeup with nothing due costs one clock read, not a walk over the FIFOs.
        self._due = INF
        self.stale = 0  # timers cancelled since the last walk (which drops them from the heads)
        self._soon: list[Callable[[], None]] = []  # run after the current batch (soon)
        self._signals: dict[int, Callable[[], None]] = {}
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._running = False
        self.add(self._wake_r, self._on_wake)

    def add(self, fd: int, handler: Callable[[int], None], events: int = IN) -> None:
        self._handlers[fd] = handler
        self._ep.register(fd, events)

    def modify(self, fd: int, events: int) -> None:
        self._ep.modify(fd, events)

    def register(self, fd: int, events: int) -> None:
        """fd in the epoll set without a handler: its events are dropped until `handle` gives
        it one (the forwarder's pooled dial sockets, registered in batches off its hot path)."""
        self._ep.register(fd, events)

    def handle(self, fd: int, handler: Callable[[int], None]) -> None:
        """A handler for an fd already in the epoll set (`register`, or left there by `forget`)."""
        self._handlers[fd] = handler

    def forget(self, fd: int) -> None:
        """Drop fd's handler only, for an fd about to be closed that no other process or fd
        shares: closing it takes it out of the epoll set, no EPOLL_CTL_DEL is needed."""
        self._handlers.pop(fd, None)

    def remove(self, fd: int) -> None:
        if self._handlers.pop(fd, None) is not None:
            try:
                self._ep.unregister(fd)
            except OSError:
                pass

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        # One FIFO per distinct delay: deadlines in a FIFO are monotonic, so push, cancel and
        # expiry are all O(1). (A heap would need periodic compaction of the thousands of
        # cancelled timeouts of answered forwards: a multi-millisecond latency spike.)
        t = Timer(time.monotonic() + delay, callback, self)
        q = self._timers.get(delay)
        if q is None:
            q = self._timers[delay] = deque()
        q.append(t)
        if t.when < self._due:
            self._due = t.when
        return t

    def soon(self, callback: Callable[[], None]) -> None:
        """callback runs once the current batch of events is handled, before the next wait:
        call_later(0.0) without a timer (no clock read, no FIFO walk), for per-connection
        work such as the forwarder giving its recycled sockets back."""
        self._soon.append(callback)

    def on_signal(self, signum: int, callback: Callable[[], None]) -> None:
        self._signals[signum] = callback
        signal.signal(signum, _ignore)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)

    def _on_wake(self, events: int) -> None:
        try:
            data = os.read(self._wake_r, 512)
        except BlockingIOError:
            return
        for signum in dict.fromkeys(data):  # coalesce repeated signals
            cb = self._signals.get(signum)
            if cb is not None:
                cb()

    def stop(self) -> None:
        self._running = False

    def _log_error(self, exc: BaseException) -> None:
        """Default `on_error`: one line (with the traceback) per ERROR_LOG_EVERY at most."""
        now = time.monotonic()
        if now - self._last_error_log >= ERROR_LOG_EVERY:
            self._last_error_log = now
            log.error("a handler failed (%d so far, contained): %r", self.errors, exc,
                      exc_info=exc)

    def _fault(self, exc: BaseException) -> None:
        self.errors += 1
        try:
            self.on_error(exc)
        except Exception:  # noqa: BLE001 - the error reporter itself must not stop the loop
            pass

    def run(self) -> None:
        self._running = True
        handlers = self._handlers
        poll = self._ep.poll
        monotonic = time.monotonic
        soon = self._soon
        while self._running:
            # Due timers first, then the wait: a timer set while handling a batch of events
            # (even with delay 0) runs after that whole batch and before the next poll.
            now = monotonic()
            if self._due <= now or self.stale > PRUNE_AFTER:
                self._expire(now)
                if not self._running:  # a timer stopped the loop
                    break
                now = monotonic()
            due = self._due
            timeout = -1.0 if due == INF else max(0.0, due - now)
            if soon:  # set by a timer or by a soon callback: no waiting before it runs
                timeout = 0.0
            for fd, ev in poll(timeout, 256):
                h = handlers.get(fd)
                if h is not None:
                    try:
                        h(ev)
                    except Exception as exc:  # noqa: BLE001 - contained to this event
                        self._fault(exc)
            if soon:
                self._run_soon()
        else:  # a handler stopped the loop: what was due by then still runs, as it always did
            now = monotonic()
            if self._due <= now:
                self._expire(now)

    def _run_soon(self) -> None:
        todo = self._soon[:]
        self._soon.clear()  # in place: run() holds this list; callbacks may add to it again
        for cb in todo:
            try:
                cb()
            except Exception as exc:  # noqa: BLE001 - contained to this callback
                self._fault(exc)

    def _expire(self, now: float) -> None:
        """Run the timers due by now, drop the cancelled ones at the FIFOs' heads, and find
        the next deadline (timers the callbacks set included)."""
        due = INF
        for q in list(self._timers.values()):
            while q and (q[0].cancelled or q[0].when <= now):
                t = q.popleft()
                if not t.cancelled:
                    try:
                        t.callback()
                    except Exception as exc:  # noqa: BLE001 - contained to this timer
                        self._fault(exc)
        for q in self._timers.values():
            while q and q[0].cancelled:
                q.popleft()
            if q and q[0].when < due:
                due = q[0].when
        self._due = due
        self.stale = 0
