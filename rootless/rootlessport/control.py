"""The control socket Podman's `network connect`/`disconnect` use (spec/rootlessport.md §6).

Podman (`reloadRootlessRLKPortMapping`) connects to `TmpDir/rp/<ContainerID>` (SOCK_SEQPACKET),
sends one packet, the JSON-encoded new ChildIP and a newline (`"10.89.0.2"\\n`), and reads to
EOF: exactly `OK` is success, anything else becomes `port reloading failed: <text>`.

Only processes of the user's own user namespace can reach the socket (`rp/` is 0700), but a
peer is still capped: a few connections at once, one packet each, closed after a timeout.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
from collections.abc import Callable
from functools import partial

from netns.loop import Loop, Timer
from rootless.rootlessport.config import DEFAULT_CHILD_IP, ConfigError, ip_text

log = logging.getLogger("rootless.rootlessport")

MAX_CONNS = 8
MAX_PACKET = 4096
TIMEOUT = 5.0  # seconds a connection may stay without sending its packet
_PEERCRED = struct.Struct("3i")  # pid, uid, gid


def _own_uid(conn: socket.socket) -> bool:
    """Only our own uid (Podman, in the same user namespace) may re-point the ports, whatever
    the mode of a directory that existed before us."""
    try:
        _, uid, _ = _PEERCRED.unpack(
            conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    except OSError:
        return False
    return bool(uid == os.getuid())


def parse_child_ip(data: bytes) -> str:
    """The packet's ChildIP; "" means the container's loopback, as at start-up."""
    try:
        value = json.loads(data.decode())
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: "[[[[..."
        raise ConfigError(f"expected a JSON string with the new ChildIP, got {data[:60]!r}") from None
    if not isinstance(value, str):
        raise ConfigError(f"expected a JSON string with the new ChildIP, got {value!r:.60}")
    return ip_text(value, "ChildIP") if value else DEFAULT_CHILD_IP


class ControlServer:
    def __init__(self, loop: Loop, sock: socket.socket, retarget: Callable[[str], None]) -> None:
        self.loop, self.sock, self.retarget = loop, sock, retarget
        self.conns: dict[int, tuple[socket.socket, Timer]] = {}
        loop.add(sock.fileno(), self._on_accept)

    def _on_accept(self, ev: int) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # out of fds, aborted: the next one may work
                log.warning("control socket: accept: %s", e)
                return
            if len(self.conns) >= MAX_CONNS or not _own_uid(conn):
                conn.close()
                continue
            conn.setblocking(False)
            fd = conn.fileno()
            self.conns[fd] = (conn, self.loop.call_later(TIMEOUT, partial(self._close, fd)))
            self.loop.add(fd, partial(self._on_packet, fd))

    def _on_packet(self, fd: int, ev: int) -> None:
        conn = self.conns[fd][0]
        try:
            data = conn.recv(MAX_PACKET)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(fd)
            return
        if data:
            reply = self.handle(data)
            try:
                conn.send(reply)
            except OSError as e:
                log.warning("control socket: reply: %s", e)
        self._close(fd)  # Podman reads to EOF

    def handle(self, data: bytes) -> bytes:
        try:
            ip = parse_child_ip(data)
            self.retarget(ip)
        except ConfigError as e:
            return str(e).encode()
        except Exception as e:  # a fault of ours: Podman still gets an answer, not a 5 s wait
            log.exception("control socket: re-pointing the ports")
            return f"internal error: {type(e).__name__}: {e}".encode()
        log.info("ports re-pointed at %s", ip)
        return b"OK"

    def _close(self, fd: int) -> None:
        entry = self.conns.pop(fd, None)
        if entry is not None:
            conn, timer = entry
            timer.cancel()
            self.loop.remove(fd)
            conn.close()

    def close(self) -> None:
        for fd in list(self.conns):
            self._close(fd)
        self.loop.remove(self.sock.fileno())
