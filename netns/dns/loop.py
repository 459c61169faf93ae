"""A tiny epoll loop: fd callbacks, timers and signals, nothing else.

Why not asyncio: importing asyncio costs ~30 ms here, which would double the time from start
to first answer (benchmarked), and spec §3.2 measured a plain socket loop as fast as uvloop
for the fast path. Everything runs on one thread, so a reload (a signal, dispatched from the
loop, never from inside a handler) can never interleave with a query.
"""

from __future__ import annotations

import heapq
import os
import select
import signal
import time
from collections.abc import Callable
from types import FrameType

IN = select.EPOLLIN
OUT = select.EPOLLOUT


class Timer:
    __slots__ = ("when", "callback", "cancelled")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        # Drop the callback now: it usually closes over an object that holds this timer, and
        # that cycle would otherwise live on until the cyclic GC (a latency spike) finds it.
        self.callback = _noop

    def __lt__(self, other: Timer) -> bool:
        return self.when < other.when


def _noop() -> None:
    pass


def _ignore(signum: int, frame: FrameType | None) -> None:
    """The real work happens in the loop, woken through the wakeup fd."""


class Loop:
    def __init__(self) -> None:
        self._ep = select.epoll()
        self._handlers: dict[int, Callable[[int], None]] = {}
        self._timers: list[Timer] = []
        self._signals: dict[int, Callable[[], None]] = {}
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._running = False
        self.add(self._wake_r, self._on_wake)

    def add(self, fd: int, handler: Callable[[int], None], events: int = IN) -> None:
        self._handlers[fd] = handler
        self._ep.register(fd, events)

    def modify(self, fd: int, events: int) -> None:
        self._ep.modify(fd, events)

    def remove(self, fd: int) -> None:
        if self._handlers.pop(fd, None) is not None:
            try:
                self._ep.unregister(fd)
            except OSError:
                pass

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        t = Timer(time.monotonic() + delay, callback)
        timers = self._timers
        if len(timers) >= 4096 and len(timers) & 4095 == 0:
            # Cancelled timers (answered forwards) would otherwise pile up until they expire.
            timers[:] = [x for x in timers if not x.cancelled]
            heapq.heapify(timers)
        heapq.heappush(timers, t)
        return t

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

    def run(self) -> None:
        self._running = True
        handlers = self._handlers
        timers = self._timers
        poll = self._ep.poll
        while self._running:
            timeout = -1.0
            if timers:
                timeout = max(0.0, timers[0].when - time.monotonic())
            for fd, ev in poll(timeout, 256):
                h = handlers.get(fd)
                if h is not None:
                    h(ev)
            if timers:
                now = time.monotonic()
                while timers and timers[0].when <= now:
                    t = heapq.heappop(timers)
                    if not t.cancelled:
                        t.callback()
