"""The one flock helper: every lock burrow takes on a state file goes through `locked()`.

An flock is released by the kernel when its holder dies, so a lock never goes stale.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from netns.errors import BurrowError


class LockTimeout(BurrowError):
    pass


class LockBusy(BurrowError):
    """Raised by `locked(..., timeout=0)` when another process holds the lock."""


def _open(path: Path, directory: bool) -> int:
    # A directory is locked through a read-only fd of it (no lock file created beside it).
    flags = os.O_RDONLY | os.O_DIRECTORY if directory else os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW
    try:
        return os.open(path, flags | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        why = "a symlink: never followed, remove it" if exc.errno == errno.ELOOP else exc.strerror
        raise BurrowError(f"lock {path}: {why or exc}") from exc


@contextmanager
def locked(path: Path, *, timeout: float | None = None, what: str = "burrow state",
           directory: bool = False) -> Iterator[int]:
    """Hold an exclusive flock on `path` for the block; yields the lock's fd.

    timeout None waits forever (a blocking flock: the kernel queues waiters fairly); 0 fails at
    once with LockBusy; otherwise poll until the deadline and raise LockTimeout naming the fix.
    `directory`: lock the existing directory `path` itself.
    """
    fd = _open(path, directory)
    try:
        if timeout is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:
            _poll(fd, path, timeout, what)
        yield fd
    finally:
        os.close(fd)  # closing drops the flock


def _poll(fd: int, path: Path, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
        if timeout == 0:
            raise LockBusy(f"{what} is locked by another process ({path})")
        if time.monotonic() > deadline:
            raise LockTimeout(
                f"{what} is locked by another burrow command ({path}) for over "
                f"{timeout:.0f} s; if none is running, remove {path}"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
