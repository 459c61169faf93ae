"""The reload handshake: "apply the config now, and tell me once you have".

aardvark-dns learns of a change by SIGHUP, which returns at once: the setup that wrote a new
name returns before the server has read it, and a container that asks for a peer's name right
away can be told it does not exist (issue 15 measured up to ~4.5 ms between a setup's return
and its name resolving, under load). So burrow-dns also listens on a SOCK_SEQPACKET socket in
its config dir (statefiles.DNS_CONTROL): the engine connects, the server reloads and answers
one byte, and the setup returns only then. Connecting is the whole request, so there is nothing
to parse; only root and the server's own uid may ask (SO_PEERCRED; the socket is also 0600).
Anything else (aardvark-dns, an older burrow-dns, a stale socket) gets the SIGHUP as before.

Addresses go through /proc/self/fd/<dir fd>/NAME, so a config dir deeper than sun_path's 108
bytes works too.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
from collections.abc import Callable

from netns import statefiles
from netns.dns import owned

log = logging.getLogger("netns.dns")

NAME = statefiles.DNS_CONTROL
ACCEPT_PER_WAKE = 16  # connections answered by one reload; more wait for the next wakeup
BACKLOG = 64
_PEERCRED = struct.Struct("3i")  # pid, uid, gid
APPLIED = b"1"  # the config as it is now is served
EXITING = b"0"  # no network left: the server is stopping
FAILED = b"!"  # the reload raised (logged and counted by the server)


class _Dir:
    """An O_PATH fd of the config dir, for the short /proc/self/fd address of a socket in it."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def address(self) -> str:
        return f"/proc/self/fd/{self.fd}/{NAME}"

    def __enter__(self) -> _Dir:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


# -- the server's side --------------------------------------------------------------------
class Listener:
    def __init__(self, config_dir: str, sock: socket.socket, ident: owned.Ident | None) -> None:
        self.path = os.path.join(config_dir, NAME)
        self.sock = sock
        self.ident = ident  # the socket file we bound: removed at exit only while still there
        self.answered = 0  # requests acknowledged (stats)

    @classmethod
    def bind(cls, config_dir: str) -> Listener | None:
        """Listen in `config_dir`, replacing a socket a killed (or exiting) server left behind.
        Call it only once this server owns the DNS port (a second server would steal the
        first's socket). None (logged) if that fails: the engine then falls back to SIGHUP."""
        sock = socket.socket(socket.AF_UNIX,
                             socket.SOCK_SEQPACKET | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            # Locked: an exiting server checks that the socket is its own before removing it.
            with _Dir(config_dir) as d, owned.dir_lock(config_dir):
                try:
                    os.unlink(NAME, dir_fd=d.fd)
                except FileNotFoundError:
                    pass
                old = os.umask(0o177)  # 0600 from the start: no window with a wider mode
                try:
                    sock.bind(d.address())
                finally:
                    os.umask(old)
                ident = owned.ident_of(NAME, dir_fd=d.fd)
            sock.listen(BACKLOG)
        except OSError as exc:
            sock.close()
            log.warning("no reload socket in %s (setups fall back to SIGHUP): %s", config_dir, exc)
            return None
        return cls(config_dir, sock, ident)

    def on_ready(self, reload: Callable[[], bool]) -> None:
        """Answer every waiting request with one reload (APPLIED, EXITING or FAILED)."""
        conns = []
        for _ in range(ACCEPT_PER_WAKE):
            try:
                conn, _ = self.sock.accept()
            except OSError:  # BlockingIOError: none left; anything else: next wakeup
                break
            if _allowed(conn):
                conns.append(conn)
            else:
                conn.close()
        if not conns:
            return
        answer = FAILED
        try:
            answer = APPLIED if reload() else EXITING
        finally:  # even if the reload raised: nobody is left waiting for a timeout
            for conn in conns:
                try:
                    conn.setblocking(False)
                    conn.send(answer)
                except OSError:
                    pass
                conn.close()
            self.answered += len(conns)

    def close(self, remove: bool) -> None:
        """Stop listening; with `remove` (under owned.dir_lock) the socket file goes too, if it
        is still ours: a newer server's socket under the same name stays."""
        self.sock.close()
        if remove:
            owned.unlink_if(self.path, self.ident)


def _allowed(conn: socket.socket) -> bool:
    try:
        _, uid, _ = _PEERCRED.unpack(
            conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    except OSError:
        return False
    return uid in (0, os.getuid())


# -- the engine's side --------------------------------------------------------------------
def request(config_dir: str, timeout: float) -> bool | None:
    """Ask the server of `config_dir` to reload and wait for it. True: applied. False: the
    server is exiting (it had no network left, or it closed without answering: it stopped
    between our connect and its accept). None: no burrow-dns reload socket here (or a stale
    one), a failed reload, no answer within `timeout`: the caller sends SIGHUP, as to any
    other server."""
    try:
        d = _Dir(config_dir)
    except OSError:
        return None
    with d, socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(d.address())
        except OSError:  # no socket, a stale one (refused), a full backlog (timeout)
            return None
        try:
            answer = sock.recv(1)
        except TimeoutError:
            log.warning("burrow-dns in %s did not answer a reload within %.1f s", config_dir,
                        timeout)
            return None
        except OSError:  # reset: it closed without answering, on its way out
            return False
    return True if answer == APPLIED else False if answer in (EXITING, b"") else None
