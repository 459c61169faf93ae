"""The files a burrow-dns server keeps in its config dir, removed only while they are its own.

Two servers of one config dir can overlap: one that was told no network is left is still on
its way out when a setup of another network (another gateway address, so no port clash)
starts the next one, or a restart starts one before the old one is gone. The new server binds
the reload socket and writes the pid and stats files under the same names. If the old one
then removed them by name as it exits, the new one could no longer be reached by the reload
handshake (netns/dns/control.py): setups would fall back to SIGHUP, which returns before
their names are served. So a server removes a file only while it is still the one it made
(the same device and inode; for the pid file, still its pid), and every create-or-replace and
check-and-remove of these names holds an flock on the config directory, so no other server
can put its file in place between the check and the unlink.

The lock is on the directory itself, not on a file in it: aardvark-dns reads every file there
as a network, and nothing is left behind. Anyone who may read the directory could hold that
lock, so it is waited for only briefly: a server that cannot get it still binds and writes
(as before this lock), but removes nothing at exit (a stale file is harmless: the engine
checks the pid and the socket before trusting them).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from netns import locks
from netns.errors import BurrowError

log = logging.getLogger("netns.dns")

LOCK_WAIT = 2.0  # seconds; others hold it only to replace or remove a file
Ident = tuple[int, int]  # (st_dev, st_ino)


@contextmanager
def dir_lock(config_dir: str, timeout: float = LOCK_WAIT) -> Iterator[bool]:
    """Hold the config dir's flock for the block; yields False (logged unless `timeout` is 0)
    if it could not be had: then the caller must not remove anything."""
    with ExitStack() as stack:
        ok = True
        try:
            stack.enter_context(locks.locked(Path(config_dir), timeout=timeout, directory=True,
                                             what=f"burrow-dns config directory {config_dir}"))
        except BurrowError as exc:  # busy, or the directory is gone
            ok = False
            if timeout:
                log.warning("%s", exc)
        yield ok


def ident_of(path: str, dir_fd: int | None = None) -> Ident | None:
    try:
        st = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def unlink_if(path: str, ident: Ident | None) -> bool:
    """Remove `path` if it is still the file `ident` names. Call under `dir_lock`."""
    if ident is None or ident_of(path) != ident:
        return False
    try:
        os.unlink(path)
    except OSError:
        return False
    return True


def _pid_in(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read(32).strip()
    except OSError:
        return None


def unlink_pid_if(path: str, pid: int) -> None:
    """Remove the pid file if it still names `pid`. Call under `dir_lock`."""
    if _pid_in(path) == str(pid):
        try:
            os.unlink(path)
        except OSError:
            pass


def superseded(path: str, pid: int) -> bool:
    """Whether the pid file names another process than `pid` (a newer server took over).
    Not locked: a file being written reads empty, which does not count."""
    text = _pid_in(path)
    return text is not None and text.isdigit() and text != str(pid)


def unlink_stale_pid(path: str) -> None:
    """Remove a pid file unless it names a live process (a server of another network may
    still be serving from this directory). Call under `dir_lock`."""
    text = _pid_in(path)
    if text is None:
        return
    if text.isdigit() and _alive(int(text)):
        return
    try:
        os.unlink(path)
    except OSError:
        pass


def _alive(pid: int) -> bool:
    """Not a zombie either: PID 1 in a container may not reap."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[:1]
    except (OSError, IndexError):
        return False
    return state not in ([], ["Z"], ["X"])
