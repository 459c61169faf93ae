"""UDP and TCP listeners on every listen IP, the query hot path, and reload by SIGHUP.

All per-config state (table + reply caches) lives in one immutable `State` reached through
one reference, `Server.state`: a reload builds a new one and swaps it, so a query sees either
the old table or the new one, never half of each, and the caches are invalidated with it.
Sockets are bound before the caller daemonizes, so "ready" really means "serving". A listen
address that no longer exists here (a stale config file of a network whose bridge is gone) is
logged and left out, with its network's records, instead of failing every later start; it is
tried again at each reload.

A fault in handling one packet is contained to that packet (logged, rate-limited, and counted
in the stats file); what a peer may hold is capped (netns/dns/limits.py, netns/dns/tcp.py).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from netns import statefiles
from netns.dns import config, control, fastpath, owned, table
from netns.dns.files import ConfigFiles
from netns.dns.limits import Limits, Stats
from netns.dns.resolver import Forward, Policy, Reply, error_reply, resolve
from netns.dns.tcp import TcpClients
from netns.dns.upstream import Forwarder, HostResolvers
from netns.loop import Loop

TYPE_CHECKING = False  # typing costs milliseconds at start-up, which is benchmarked
if TYPE_CHECKING:
    from typing import Any

log = logging.getLogger("netns.dns")
STATS_EVERY = 1.0  # seconds: the stats file is rewritten at most this often
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
        raise BindError(f"failed to bind udp listener on {host}:{port}: {exc.strerror}",
                        exc.errno) from exc
    try:
        tcp = _socket(ip, port, socket.SOCK_STREAM)
    except OSError as exc:
        udp.close()
        raise BindError(f"failed to bind tcp listener on {host}:{port}: {exc.strerror}",
                        exc.errno) from exc
    return Listener(ip, udp, tcp)


class BindError(StartError):
    def __init__(self, msg: str, err: int | None) -> None:
        super().__init__(msg)
        self.gone = err == errno.EADDRNOTAVAIL  # the address is not on any interface here


def bind_all(ips: Iterable[str], port: int) -> tuple[dict[str, Listener], list[str]]:
    """Bind every address, or raise the first real failure (a port clash) with none left open.

    Addresses that no longer exist in this netns are returned as the second item, logged."""
    listeners: dict[str, Listener] = {}
    gone: list[str] = []
    try:
        for ip in ips:
            try:
                listeners[ip] = bind(ip, port)
            except BindError as exc:
                if not exc.gone:
                    raise
                log.warning("%s; leaving it out until a reload finds it", exc)
                gone.append(ip)
    except StartError:
        for lst in listeners.values():
            lst.close()
        raise
    return listeners, gone


def _dir_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def listen_ips(networks: Iterable[config.Network]) -> list[str]:
    return list(dict.fromkeys(ip for n in networks for ip in n.listen_ips))


def kept(networks: Mapping[str, config.Network], gone: Iterable[str]) -> dict[str, config.Network]:
    """The networks to serve: not those none of whose listen addresses exists here any more,
    whose records are stale (the bridge was removed without a teardown)."""
    missing = set(gone)
    out = {}
    for name, n in networks.items():
        if set(n.listen_ips) <= missing:
            log.warning("network %s: none of its listen addresses (%s) exists here; left out",
                        n.name, ", ".join(n.listen_ips))
        else:
            out[name] = n
    return out


class Server:
    def __init__(
        self, files: ConfigFiles, port: int, policy: Policy, tbl: table.Table,
        listeners: dict[str, Listener], limits: Limits | None = None,
    ) -> None:  # fmt: skip
        self.files = files
        config_dir = self.config_dir = files.path
        self.port = port
        self.policy = policy
        self.state = State(tbl)
        self.listeners = listeners
        self.limits = limits or Limits()
        self.stats = Stats(os.path.join(config_dir, statefiles.DNS_STATS), self.limits)
        self.stats.gauges = self._gauges
        self.host = HostResolvers(os.environ.get("BURROW_DNS_RESOLV_CONF", "/etc/resolv.conf"))
        self.on_empty: Callable[[], None] = lambda: None
        self.loop: Loop | None = None
        self.forwarder: Forwarder | None = None
        self.tcp: TcpClients | None = None
        self.control: control.Listener | None = None
        self.stopping = False  # no network was left: on_empty() was called
        self.dir_id = _dir_id(config_dir)
        self.pid_file: str | None = None  # set once written: we exit when it names another

    @classmethod
    def prepare(cls, config_dir: str, port: int, policy: Policy,
                limits: Limits | None = None) -> Server:
        """Load the config and bind every listener, or raise StartError. No loop needed yet."""
        if not os.path.isdir(config_dir):
            raise StartError(f"config directory {config_dir} does not exist or is not a directory")
        files = ConfigFiles(config_dir)
        try:
            networks = files.read()
        except OSError as exc:
            raise StartError(f"read config directory {config_dir}: {exc.strerror}") from exc
        listeners, gone = bind_all(listen_ips(networks.values()), port)
        tbl = table.build(kept(networks, gone).values())
        server = cls(files, port, policy, tbl, listeners, limits)
        if listeners:  # only now: the DNS port is ours, so no other server owns the socket
            server.control = control.Listener.bind(config_dir)
        return server

    def start(self, loop: Loop, timeout: float) -> None:
        self.loop = loop
        loop.on_error = lambda exc: self.stats.fault("event loop", exc)
        self.forwarder = Forwarder(loop, timeout, self.limits, self.stats)
        self.tcp = TcpClients(self, loop, self.limits, self.stats)
        self._update_own()
        for lst in self.listeners.values():
            self._register(lst)
        self.stats.write(force=True)
        loop.call_later(STATS_EVERY, self._write_stats)

    def serve_reloads(self, reload: Callable[[], bool]) -> None:
        """Reload requests on the control socket (netns/dns/control.py) run `reload`, which
        returns whether the server goes on serving."""
        assert self.loop is not None
        ctl = self.control
        if ctl is not None:
            self.loop.add(ctl.sock.fileno(), lambda ev: ctl.on_ready(reload))

    def _gauges(self) -> dict[str, object]:
        fwd = self.forwarder
        return {
            "listen": sorted(self.listeners), "networks": len(self.state.table.networks),
            "tcp_connections": len(self.tcp.conns) if self.tcp is not None else 0,
            "upstream_pending": fwd.pending if fwd is not None else 0,
            "upstream_udp_sockets": fwd.udp_sockets if fwd is not None else 0,
            # what reloads cost: after one container's setup, one file and its one new line
            "config": {"reads": self.files.reads, "files_read": self.files.files_read,
                       "bytes_read": self.files.bytes_read, "lines_parsed": self.files.lines_parsed,
                       "reload_requests": self.control.answered if self.control else 0},
        }

    def _write_stats(self) -> None:
        assert self.loop is not None
        self.loop.call_later(STATS_EVERY, self._write_stats)  # first: a failure must not stop it
        if _dir_id(self.config_dir) != self.dir_id:
            # Removed (a world's runtime dir gone) or replaced: our pid file went with it, so
            # no engine can signal us any more, and a new server could not bind our port.
            log.info("config directory %s is gone: nobody can reach us, exiting", self.config_dir)
            self.stopping = True
            self.on_empty()
            return
        if self.pid_file is not None and owned.superseded(self.pid_file, os.getpid()):
            # A newer server of this directory wrote its pid over ours (it was started while
            # we were on our way out): engines reach it, not us, so our records would go stale.
            log.info("%s names another server now: exiting", self.pid_file)
            self.stopping = True
            self.on_empty()
            return
        self.stats.write()

    def _update_own(self) -> None:
        assert self.forwarder is not None
        # Forwarding to one of our own addresses on our own port would loop forever.
        own = self.listeners if self.port == 53 else {}
        self.forwarder.own = frozenset(own)

    def _register(self, lst: Listener) -> None:
        assert self.loop is not None and self.tcp is not None
        accept = self.tcp.accept
        self.loop.add(lst.udp.fileno(), self._udp_handler(lst))
        self.loop.add(lst.tcp.fileno(), lambda ev: accept(lst.tcp, lst.ip))

    def _unregister(self, lst: Listener) -> None:
        assert self.loop is not None
        self.loop.remove(lst.udp.fileno())
        self.loop.remove(lst.tcp.fileno())
        lst.close()

    # -- reload ---------------------------------------------------------------------------
    def reload(self) -> bool:
        """Apply what changed in the config directory: only the changed files are read and
        only their networks' records rebuilt (netns/dns/files.py, table.update); the new
        table (and its empty reply caches) is swapped in through one reference. False when
        no network is left (`on_empty` was called: the server stops)."""
        if self.stopping:  # told a client so already; a later change needs a new server
            return False
        try:
            networks = self.files.read()
        except OSError as exc:
            log.error("reload failed, keeping the old config: %s", exc)
            return True
        serve = kept(networks, self._bind_new(listen_ips(networks.values())))
        old = self.state.table
        changed = {n: serve.get(n) for n in old.nets.keys() | serve.keys()
                   if serve.get(n) is not old.nets.get(n)}
        tbl = table.update(old, changed, self.files.grown, self.files.shrunk) if changed else old
        if not tbl.by_listen:
            log.info("no network config left, exiting")
            self.stopping = True
            self.on_empty()
            return False
        if changed:
            self.state = State(tbl)  # the one atomic swap
        for ip in [ip for ip in self.listeners if ip not in tbl.by_listen]:
            self._unregister(self.listeners.pop(ip))
        self._update_own()
        log.info("reloaded: %s", ", ".join(sorted(changed)) or "no change")
        return True

    def _bind_new(self, ips: Iterable[str]) -> list[str]:
        """Listen on addresses new to us; returns those that do not exist here (yet)."""
        gone: list[str] = []
        for ip in ips:
            if ip in self.listeners:
                continue
            try:
                lst = bind(ip, self.port)
            except BindError as exc:
                log.warning("%s", exc)
                gone += [ip] if exc.gone else []
                continue
            self.listeners[ip] = lst
            self._register(lst)
        return gone

    def close(self) -> None:
        for lst in self.listeners.values():
            if self.loop is not None:
                self._unregister(lst)
            else:
                lst.close()
        self.listeners.clear()
        if self.tcp is not None:
            self.tcp.close_all()
        if self.forwarder is not None:
            self.forwarder.close()
        # Only our own files go: a newer server of this directory may already have put its
        # socket and stats file under the same names (netns/dns/owned.py).
        with owned.dir_lock(self.config_dir) as ours:
            if self.control is not None:
                if self.loop is not None:
                    self.loop.remove(self.control.sock.fileno())
                self.control.close(remove=ours)
                self.control = None
            if ours:
                self.stats.remove()

    # -- UDP --------------------------------------------------------------------------------
    def _udp_handler(self, lst: Listener) -> Callable[[int], None]:
        recvfrom = lst.udp.recvfrom
        sendto = lst.udp.sendto
        ip = lst.ip
        slow = self.slow
        fault = self.stats.fault

        def on_read(events: int) -> None:
            # The hot path: one dict lookup for the scope, one for the packed reply.
            state = self.state
            entries = state.udp.entries
            by_source = state.table.by_source
            by_who = state.table.by_who
            default = state.table.by_listen.get(ip)
            if default is None:
                return
            for _ in range(64):
                try:
                    data, addr = recvfrom(4096)
                except OSError:  # BlockingIOError: drained
                    return
                who = by_source.get(addr[0])
                scope = by_who[who] if who is not None else default
                body = entries.get((scope, data[2:]))
                if body:
                    try:
                        sendto(data[:2] + body, addr)
                    except OSError:
                        pass
                    continue
                try:
                    slow(state, scope, data, body is not None, addr[0], _to(sendto, addr), False)
                except Exception as exc:  # noqa: BLE001 - one packet, never the server
                    fault("udp", exc)

        return on_read

    # -- the slow path (cache misses), shared by UDP and TCP -------------------------------
    def slow(
        self, state: State, scope: table.Scope, data: bytes, forward_known: bool, client: str,
        send: Callable[[bytes], object], tcp: bool,
    ) -> bool:
        """A fast-path miss: resolve with dnslib, cache, answer or forward. False = drop."""
        outcome = Forward(scope.upstreams) if forward_known else self._resolve(state, scope, data, tcp)
        if outcome is None:
            return False
        if isinstance(outcome, Reply):
            _send(send, outcome.wire)
            return True
        servers = outcome.servers or self.host.servers()

        def deliver(reply: bytes | None) -> None:
            if reply is None:
                reply = error_reply(data, 2)  # SERVFAIL: never leave the client to time out
            if reply is not None:
                _send(send, reply)

        assert self.forwarder is not None
        key = state.table.budget_key(client)
        if not self.forwarder.forward(data, servers, deliver, tcp, key) and tcp:
            deliver(None)  # shed: a TCP client waits for each answer, so it gets SERVFAIL now
        return True

    def _resolve(self, state: State, scope: table.Scope, data: bytes, tcp: bool) -> Reply | Forward | None:
        outcome = resolve(data, scope, self.policy, tcp=tcp)
        cache = state.tcp if tcp else state.udp
        if isinstance(outcome, Reply) and outcome.cacheable:
            cache.put(scope, data, outcome.wire)
        elif isinstance(outcome, Forward):
            cache.put(scope, data, None)
        return outcome


def _to(sendto: Callable[[bytes, Any], object], addr: Any) -> Callable[[bytes], object]:
    return lambda wire: sendto(wire, addr)


def _send(send: Callable[[bytes], object], wire: bytes) -> None:
    try:
        send(wire)
    except OSError:
        pass
