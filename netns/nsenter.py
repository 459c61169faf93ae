"""The one setns: enter a namespace by fd, on the calling thread only (stdlib has no os.setns
on Python 3.11)."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    if _libc.setns(fd, nstype) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def unshare_net() -> None:
    """Move this thread into a new, empty netns of its own (owned by its user namespace)."""
    if _libc.unshare(CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


@contextmanager
def entered(fd: int) -> Iterator[None]:
    """Run the block with this thread inside netns `fd`, then come back.

    Coming back fails when `fd` belongs to a user namespace that owns no way back to ours; such
    callers must dial from a dedicated thread or process instead.
    """
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(fd)
        try:
            yield
        finally:
            setns(home)
    finally:
        os.close(home)
