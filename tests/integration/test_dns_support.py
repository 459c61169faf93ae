"""Helpers for the burrow-dns integration tests (no tests here).

Sockets are created *inside* a test namespace by a short-lived thread that joins it with
setns(2): a socket keeps the namespace it was created in, so the test process can then use it
(and dnspython with `sock=`) without spawning a client per query. All traffic therefore stays
inside the throwaway namespace.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rrset

from tests.nsutil import VENV_BIN, Netns

CLONE_NEWNET = 0x40000000
BURROW_DNS = str(VENV_BIN / "burrow-dns")
_libc = ctypes.CDLL(None, use_errno=True)


def in_netns(ns: Netns, fn: Callable[[], Any]) -> Any:
    """Run fn() on a thread that has joined ns's network namespace."""
    box: dict[str, Any] = {}

    def target() -> None:
        fd = os.open(ns.path, os.O_RDONLY)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            box["error"] = exc
        finally:
            os.close(fd)

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def ns_socket(ns: Netns, family: int, kind: int, bind: tuple[Any, ...] | None = None) -> socket.socket:
    def make() -> socket.socket:
        s = socket.socket(family, kind)
        if bind is not None:
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(bind)
        return s

    sock: socket.socket = in_netns(ns, make)
    return sock


def fam(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def query(
    ns: Netns, server: str, name: str, rdtype: str = "A", *, source: str | None = None,
    tcp: bool = False, timeout: float = 3.0, **make: Any,
) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, **make)
    src = (source, 0) if source else None
    if tcp:
        s = ns_socket(ns, fam(server), socket.SOCK_STREAM, src)
        with s:
            s.settimeout(timeout)
            s.connect((server, 53))
            return dns.query.tcp(q, server, timeout=timeout, sock=s)
    s = ns_socket(ns, fam(server), socket.SOCK_DGRAM, src)
    with s:
        return dns.query.udp(q, server, timeout=timeout, sock=s, ignore_trailing=True)


def addrs(msg: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in msg.answer for rd in rrset)


def tcp_frames(sock: socket.socket, wires: list[bytes]) -> list[bytes]:
    """Send several framed queries on one connection, then read as many framed replies."""
    sock.sendall(b"".join(struct.pack("!H", len(w)) + w for w in wires))
    return read_tcp_frames(sock, len(wires))


def read_tcp_frames(sock: socket.socket, count: int) -> list[bytes]:
    """Up to `count` length-prefixed DNS messages read from a TCP connection (fewer if it
    closes first)."""
    out: list[bytes] = []
    buf = b""
    while len(out) < count:
        chunk = sock.recv(65535)
        if not chunk:
            break
        buf += chunk
        while len(buf) >= 2 and len(buf) >= 2 + struct.unpack("!H", buf[:2])[0]:
            n = struct.unpack("!H", buf[:2])[0]
            out.append(buf[2 : 2 + n])
            buf = buf[2 + n :]
    return out


class FakeUpstream:
    """A DNS server on (ip, 53) inside the namespace, UDP and TCP, that answers A queries with
    `answer` and records (transport, qname) for every query; `silent` makes it never reply."""

    def __init__(self, ns: Netns, ip: str, answer: str = "192.0.2.1", silent: bool = False):
        self.answer = answer
        self.silent = silent
        self.seen: list[tuple[str, str]] = []
        self.udp = ns_socket(ns, fam(ip), socket.SOCK_DGRAM, (ip, 53))
        self.tcp = ns_socket(ns, fam(ip), socket.SOCK_STREAM, (ip, 53))
        self.tcp.listen(16)
        self._stop = False
        self.threads = [threading.Thread(target=self._serve_udp, daemon=True),
                        threading.Thread(target=self._serve_tcp, daemon=True)]
        for t in self.threads:
            t.start()

    def _reply(self, wire: bytes, transport: str) -> bytes | None:
        q = dns.message.from_wire(wire)
        self.seen.append((transport, q.question[0].name.to_text().lower()))
        if self.silent:
            return None
        r = dns.message.make_response(q)
        if q.question[0].rdtype == 1:
            r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", self.answer))
        return r.to_wire()

    def _serve_udp(self) -> None:
        self.udp.settimeout(0.2)
        while not self._stop:
            try:
                wire, addr = self.udp.recvfrom(65535)
            except OSError:
                continue
            reply = self._reply(wire, "udp")
            if reply is not None:
                self.udp.sendto(reply, addr)

    def _serve_tcp(self) -> None:
        self.tcp.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    n = struct.unpack("!H", conn.recv(2))[0]
                    wire = b""
                    while len(wire) < n:
                        wire += conn.recv(n - len(wire))
                    reply = self._reply(wire, "tcp")
                    if reply is not None:
                        conn.sendall(struct.pack("!H", len(reply)) + reply)
                    else:
                        conn.recv(1)  # silent: hold the connection until the asker gives up
                except OSError:
                    pass

    def close(self) -> None:
        self._stop = True
        for t in self.threads:
            t.join()
        self.udp.close()
        self.tcp.close()


def alive(pid: int) -> bool:
    """PID 1 here does not reap orphans, so a dead daemon lingers as a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_dead(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.02)
    return False


def start_dns(ns: Netns, cfg: Path, env: dict[str, str] | None = None, port: int = 53,
              check: bool = True) -> Any:
    full = {**os.environ, **(env or {})}
    return ns.run([BURROW_DNS, "--config", str(cfg), "-p", str(port), "run"], env=full,
                  check=check, timeout=20)


def pid_of(cfg: Path) -> int:
    return int((cfg / "aardvark.pid").read_text())
