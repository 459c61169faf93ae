"""UDP and TCP listeners on every listen IP, the query hot path, and reload by SIGHUP.

All per-config state (table + reply caches) lives in one immutable `State` reached through
one reference, `Server.state`: a reload builds a new one and swaps it, so a query sees either
the old table or the new one, never half of each, and the caches are invalidated with it.
Sockets are bound before the caller daemonizes, so "ready" really means "serving".
"""

from __future__ import annotations

import os
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from netns.dns import config, fastpath, table
from netns.dns.resolver import Forward, Policy, Reply, error_reply, resolve
from netns.dns.upstream import Forwarder, HostResolvers
from netns.loop import IN, OUT, Loop

TYPE_CHECKING = False  # typing costs milliseconds at start-up, which is benchmarked
if TYPE_CHECKING:
    from typing import Any

Log = Callable[[str], None]
TCP_IDLE = 3.0  # seconds a TCP client may sit between messages (aardvark HEAD)
MAX_TCP_CONNS = 512
RCVBUF = 4 << 20  # room for a burst while a reload rebuilds the table
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # root may exceed rmem_max


class StartError(Exception):
    """Why the server cannot start; the CLI prints it and exits 1."""


@dataclass(frozen=True)
class State:
    table: table.Table
    udp: fastpath.ReplyCache = field(default_factory=fastpath.ReplyCache)
    tcp: fastpath.ReplyCache = field(default_factory=fastpath.ReplyCache)


@dataclass(frozen=True)
class Listener:
    ip: str
    udp: socket.socket
    tcp: socket.socket

    def close(self) -> None:
        self.udp.close()
        self.tcp.close()


def _socket(ip: str, port: int, kind: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, kind | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        else:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((ip, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def bind(ip: str, port: int) -> Listener:
    host = f"[{ip}]" if ":" in ip else ip
    try:
        udp = _socket(ip, port, socket.SOCK_DGRAM)
    except OSError as exc:
        raise StartError(f"failed to bind udp listener on {host}:{port}: {exc.strerror}") from exc
    try:
        tcp = _socket(ip, port, socket.SOCK_STREAM)
    except OSError as exc:
        udp.close()
        raise StartError(f"failed to bind tcp listener on {host}:{port}: {exc.strerror}") from exc
    return Listener(ip, udp, tcp)


def load(config_dir: str, log: Log) -> table.Table:
    loaded = config.load_dir(config_dir)
    for err in loaded.errors:
        log(err)
    return table.build(loaded.networks)


class Server:
    def __init__(
        self, config_dir: str, port: int, policy: Policy, log: Log, tbl: table.Table,
        listeners: dict[str, Listener],
    ) -> None:
        self.config_dir = config_dir
        self.port = port
        self.policy = policy
        self.log = log
        self.state = State(tbl)
        self.listeners = listeners
        self.host = HostResolvers(os.environ.get("BURROW_DNS_RESOLV_CONF", "/etc/resolv.conf"))
        self.on_empty: Callable[[], None] = lambda: None
        self.loop: Loop | None = None
        self.forwarder: Forwarder | None = None
        self.conns: set[TcpConn] = set()

    @classmethod
    def prepare(cls, config_dir: str, port: int, policy: Policy, log: Log) -> Server:
        """Load the config and bind every listener, or raise StartError. No loop needed yet."""
        if not os.path.isdir(config_dir):
            raise StartError(f"config directory {config_dir} does not exist or is not a directory")
        try:
            tbl = load(config_dir, log)
        except OSError as exc:
            raise StartError(f"read config directory {config_dir}: {exc.strerror}") from exc
        listeners: dict[str, Listener] = {}
        try:
            for ip in tbl.listen_ips:
                listeners[ip] = bind(ip, port)
        except StartError:
            for lst in listeners.values():
                lst.close()
            raise
        return cls(config_dir, port, policy, log, tbl, listeners)

    def start(self, loop: Loop, timeout: float) -> None:
        self.loop = loop
        self.forwarder = Forwarder(loop, timeout)
        self._update_own()
        for lst in self.listeners.values():
            self._register(lst)
        loop.call_later(1.0, self._sweep)

    def _update_own(self) -> None:
        assert self.forwarder is not None
        # Forwarding to one of our own addresses on our own port would loop forever.
        own = self.listeners if self.port == 53 else {}
        self.forwarder.own = frozenset(own)

    def _register(self, lst: Listener) -> None:
        assert self.loop is not None
        self.loop.add(lst.udp.fileno(), self._udp_handler(lst))
        self.loop.add(lst.tcp.fileno(), lambda ev: self._accept(lst))

    def _unregister(self, lst: Listener) -> None:
        assert self.loop is not None
        self.loop.remove(lst.udp.fileno())
        self.loop.remove(lst.tcp.fileno())
        lst.close()

    # -- reload ---------------------------------------------------------------------------
    def reload(self) -> None:
        try:
            tbl = load(self.config_dir, self.log)
        except OSError as exc:
            self.log(f"reload failed, keeping the old config: {exc}")
            return
        if not tbl.by_listen:
            self.log("no network config left, exiting")
            self.on_empty()
            return
        added = [ip for ip in tbl.listen_ips if ip not in self.listeners]
        for ip in added:
            try:
                lst = bind(ip, self.port)
            except StartError as exc:
                self.log(str(exc))
                continue
            self.listeners[ip] = lst
            self._register(lst)
        self.state = State(tbl)  # the one atomic swap
        for ip in [ip for ip in self.listeners if ip not in tbl.by_listen]:
            self._unregister(self.listeners.pop(ip))
        self._update_own()
        self.log(f"reloaded: networks {', '.join(tbl.networks)}")

    def close(self) -> None:
        for lst in self.listeners.values():
            if self.loop is not None:
                self._unregister(lst)
            else:
                lst.close()
        self.listeners.clear()
        for conn in list(self.conns):
            conn.close()

    # -- UDP --------------------------------------------------------------------------------
    def _udp_handler(self, lst: Listener) -> Callable[[int], None]:
        recvfrom = lst.udp.recvfrom
        sendto = lst.udp.sendto
        ip = lst.ip

        def on_read(events: int) -> None:
            # The hot path: one dict lookup for the scope, one for the packed reply.
            state = self.state
            entries = state.udp.entries
            by_source = state.table.by_source
            default = state.table.by_listen.get(ip)
            if default is None:
                return
            for _ in range(64):
                try:
                    data, addr = recvfrom(4096)
                except BlockingIOError:
                    return
                except OSError:
                    return
                scope = by_source.get(addr[0]) or default
                body = entries.get((scope, data[2:]))
                if body:
                    try:
                        sendto(data[:2] + body, addr)
                    except OSError:
                        pass
                    continue
                self._slow(state, scope, data, body is not None, addr, sendto, False)

        return on_read

    def _slow(
        self, state: State, scope: table.Scope, data: bytes, forward_known: bool,
        addr: Any, send: Callable[[bytes, Any], Any], tcp: bool,
    ) -> bool:
        """A fast-path miss: resolve with dnslib, cache, answer or forward. False = drop."""
        cache = state.tcp if tcp else state.udp
        if forward_known:
            outcome: Reply | Forward | None = Forward(scope.upstreams)
        else:
            try:
                outcome = resolve(data, scope, self.policy, tcp=tcp)
            except Exception as exc:  # never let one packet take the server down
                self.log(f"error resolving a query: {exc!r}")
                return False
            if isinstance(outcome, Reply) and outcome.cacheable:
                cache.put(scope, data, outcome.wire)
            elif isinstance(outcome, Forward):
                cache.put(scope, data, None)
        if outcome is None:
            return False
        if isinstance(outcome, Reply):
            try:
                send(outcome.wire, addr)
            except OSError:
                pass
            return True
        servers = outcome.servers or self.host.servers()

        def deliver(reply: bytes | None) -> None:
            if reply is None:
                reply = error_reply(data, 2)  # SERVFAIL: never leave the client to time out
            if reply is not None:
                try:
                    send(reply, addr)
                except OSError:
                    pass

        assert self.forwarder is not None
        self.forwarder.forward(data, servers, deliver, tcp)
        return True

    # -- TCP --------------------------------------------------------------------------------
    def _accept(self, lst: Listener) -> None:
        for _ in range(16):
            try:
                sock, addr = lst.tcp.accept()
            except OSError:
                return
            if len(self.conns) >= MAX_TCP_CONNS:
                sock.close()
                continue
            sock.setblocking(False)
            self.conns.add(TcpConn(self, sock, str(addr[0]), lst.ip))

    def _sweep(self) -> None:
        assert self.loop is not None
        now = time.monotonic()
        for conn in [c for c in self.conns if c.idle_since and now - c.idle_since > TCP_IDLE]:
            conn.close()
        self.loop.call_later(1.0, self._sweep)


class TcpConn:
    """Length-framed messages, several per connection; a malformed frame closes it."""

    def __init__(self, server: Server, sock: socket.socket, source: str, listen_ip: str) -> None:
        self.server = server
        self.sock = sock
        self.fd = sock.fileno()
        self.source = source
        self.listen_ip = listen_ip
        self.buf = bytearray()
        self.out = bytearray()
        self.pending = 0
        self.eof = False
        self.idle_since = time.monotonic()
        assert server.loop is not None
        self.loop = server.loop
        self.loop.add(self.fd, self._on_event)

    def close(self) -> None:
        if self.fd >= 0:
            self.loop.remove(self.fd)
            self.sock.close()
            self.fd = -1
            self.server.conns.discard(self)

    def _on_event(self, events: int) -> None:
        if events & (select.EPOLLHUP | select.EPOLLERR):
            self.close()  # reset, or both directions shut: nobody left to answer
            return
        if events & OUT:
            self._flush()
        if events & IN and self.fd >= 0:
            self._read()

    def _read(self) -> None:
        try:
            chunk = self.sock.recv(65537)
        except BlockingIOError:
            return
        except OSError:
            self.close()
            return
        if not chunk:
            # Half-closed: answer what is in flight, but stop polling for input, or the
            # level-triggered EOF would spin the CPU until then.
            self.eof = True
            self._rearm()
            self._maybe_finish()
            return
        self.buf += chunk
        if not self.pending:
            self.idle_since = time.monotonic()
        while len(self.buf) >= 2 and self.fd >= 0:
            size = int.from_bytes(self.buf[:2], "big")
            if size < 12:
                self.close()  # no DNS message is shorter than its header
                return
            if len(self.buf) < 2 + size:
                break
            msg = bytes(self.buf[2 : 2 + size])
            del self.buf[: 2 + size]
            self._handle(msg)

    def _handle(self, msg: bytes) -> None:
        server = self.server
        state = server.state
        default = state.table.by_listen.get(self.listen_ip)
        if default is None:
            self.close()
            return
        scope = state.table.by_source.get(self.source) or default
        body = state.tcp.get(scope, msg)
        if body:
            self._write(fastpath.patch(msg, body))
            return
        self.pending += 1
        self.idle_since = 0.0  # a forward in flight is not idleness

        def reply(wire: bytes, addr: object) -> None:
            self.pending -= 1
            if not self.pending:
                self.idle_since = time.monotonic()
            self._write(wire)

        if not server._slow(state, scope, msg, body is not None, None, reply, True):
            self.close()  # unparseable message: drop the connection, as aardvark HEAD does

    def _write(self, reply: bytes) -> None:
        if self.fd < 0:
            return
        self.out += len(reply).to_bytes(2, "big") + reply
        self._flush()

    def _flush(self) -> None:
        try:
            sent = self.sock.send(self.out)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.close()
            return
        del self.out[:sent]
        self._rearm()
        self._maybe_finish()

    def _rearm(self) -> None:
        if self.fd >= 0:
            self.loop.modify(self.fd, (0 if self.eof else IN) | (OUT if self.out else 0))

    def _maybe_finish(self) -> None:
        if self.eof and not self.out and self.pending <= 0:
            self.close()

