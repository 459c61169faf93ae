"""The port manager: add, list and remove published ports (rootlesskit's port.Manager).

`add` binds every listener of a request before it publishes any (all or nothing), and says
in the error which port failed and what to do about it.
"""

from __future__ import annotations

import errno
import os
import resource
import socket
from collections.abc import Callable, Iterable
from typing import Any

from netns.loop import Loop
from rootless.ports import clientaddr, inhost, messages
from rootless.ports.budget import Guard
from rootless.ports.pool import DialerPool
from rootless.ports.portfloor import unprivileged_port_start
from rootless.ports.spec import PortSpec
from rootless.ports.target import Listener, Target
from rootless.ports.tcp import TcpProxy
from rootless.ports.udp import UdpProxy

BACKLOG = 4096


def bind_error(e: OSError, ip: str, port: int, proto: str) -> str:
    where = f"{ip or '*'}:{port}/{proto}" if ":" not in ip else f"[{ip}]:{port}/{proto}"
    if e.errno == errno.EADDRINUSE:
        return f"host port {where} is already in use; pick another host port in -p"
    if e.errno == errno.EACCES and port < unprivileged_port_start():
        floor = unprivileged_port_start()
        return (f"host port {where} is below net.ipv4.ip_unprivileged_port_start ({floor}); "
                f"use a port >= {floor}, or as root `sysctl net.ipv4.ip_unprivileged_port_start"
                f"={port}`")
    if e.errno == errno.EADDRNOTAVAIL:
        return f"host address {ip} is not an address of this host"
    return f"bind {where}: {e.strerror}"


def bind(spec: PortSpec, port: int) -> socket.socket:
    """One listener: `::` with IPV6_V6ONLY off serves both families (IPv4-only hosts: 0.0.0.0)."""
    kind = socket.SOCK_DGRAM if spec.protocol == "udp" else socket.SOCK_STREAM
    flags = kind | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
    fam = socket.AF_INET if spec.host and spec.host.version == 4 else socket.AF_INET6
    addr = spec.host_ip or "::"
    try:
        s = socket.socket(fam, flags)
    except OSError as e:
        if spec.host or e.errno != errno.EAFNOSUPPORT:
            raise
        s, addr = socket.socket(socket.AF_INET, flags), "0.0.0.0"  # no IPv6 on this host
    try:
        if s.family == socket.AF_INET6 and not spec.host:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # Accepted connections inherit it: one setsockopt here instead of one each.
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if inhost.loopback(addr):  # every client is on this host (rootless.ports.inhost)
                inhost.unpaced(s)
        s.bind((addr, port))
        if kind == socket.SOCK_STREAM:
            s.listen(BACKLOG)
    except OSError:
        s.close()
        raise
    return s


def _target(req: messages.Add | messages.Retarget) -> Target:
    """Where a burrow sandbox's ports dial (its TCP keeps client addresses inside it)."""
    return Target(req.sandbox, req.netns, req.ip4, req.ip6, req.via, inside=True,
                  onlink=req.onlink)


class PortManager:
    def __init__(self, loop: Loop, pool: DialerPool, tcp: TcpProxy, udp: UdpProxy,
                 guard: Guard, stop: Callable[[], None]) -> None:
        self.loop, self.pool, self.tcp, self.udp = loop, pool, tcp, udp
        self.guard, self.stop = guard, stop
        self.by_sandbox: dict[str, list[Listener]] = {}
        self.listeners = 0
        self.by_protocol = {"tcp": 0, "udp": 0}

    def handle(self, req: messages.Request) -> dict[str, Any]:
        if isinstance(req, messages.Ping):
            return {"ok": True, **self.stats()}
        if isinstance(req, messages.ListPorts):
            return {"ok": True, "ports": self.ports()}
        if isinstance(req, messages.Add):
            return self.add(req)
        if isinstance(req, messages.Retarget):
            target = _target(req)
            self.retarget(req.sandbox, target)
            if req.via is not None:
                self._warm(target, tuple(lst.spec for lst in self.by_sandbox.get(req.sandbox, ())))
            return {"ok": True}
        if isinstance(req, messages.Remove):
            self.remove(req.sandbox)
            return {"ok": True}
        self.stop()
        return {"ok": True}

    def stats(self) -> dict[str, Any]:
        shed = self.guard.shed
        return {"pid": os.getpid(), "tcp_connections": self.tcp.conns.total,
                "tcp_dialing": self.tcp.dials.total, "udp_flows": len(self.udp.flows),
                "udp_queued_bytes": self.udp.queued,
                "big_pipes": self.tcp.big.count,
                "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                "refused_out_of_fds": shed.for_want_of_fds, "shed": shed.to_json(),
                "handler_faults": self.loop.errors,
                "client_address": self.pool.avail.to_json(),
                "caps": self.guard.caps().to_json()}

    def ports(self) -> list[dict[str, Any]]:
        out = []
        for name, lsts in sorted(self.by_sandbox.items()):
            for spec in dict.fromkeys(lst.spec for lst in lsts):
                out.append({"sandbox": name, **spec.to_json()})
        return out

    def add(self, req: messages.Add) -> dict[str, Any]:
        """Bind everything first; publish only if every bind worked."""
        target = _target(req)
        made: list[Listener] = []
        for spec in req.ports:
            for hp, cp in spec.pairs():
                try:
                    made.append(Listener(bind(spec, hp), spec, hp, cp, target))
                except OSError as e:
                    for lst in made:
                        lst.sock.close()
                    return {"error": bind_error(e, spec.host_ip, hp, spec.protocol)}
        self.adopt(req.sandbox, made)
        if req.via is not None:
            self._warm(target, req.ports)
        return {"ok": True}

    def adopt(self, owner: str, made: list[Listener]) -> None:
        """Publish listeners already bound (burrow-rootlessport binds before it imports us)."""
        for lst in made:
            self.pool.open(lst.target.netns)
            if lst.target.via is not None:
                self.pool.open(lst.target.via)
            self.by_sandbox.setdefault(owner, []).append(lst)
            (self.tcp if lst.spec.protocol == "tcp" else self.udp).listen(lst)
            self.by_protocol[lst.spec.protocol] += 1
        self.listeners += len(made)

    def retarget(self, owner: str, target: Target) -> None:
        """Point owner's listeners at a new address (Podman's `network connect`/`disconnect`):
        new connections dial it, UDP flows to the old one end, the listeners stay bound."""
        lsts = self.by_sandbox.get(owner, [])
        old = self._netns_of(lsts)
        self.pool.open(target.netns)
        if target.via is not None:
            self.pool.open(target.via)
        for lst in lsts:
            lst.target = target
            if lst.spec.protocol == "udp":
                self.udp.close_listener(lst)
        for path in old - self._netns_of(lst for ls in self.by_sandbox.values() for lst in ls):
            self.pool.forget(path)

    @staticmethod
    def _netns_of(lsts: Iterable[Listener]) -> set[str]:
        """The namespaces listeners dial from: their sandbox's, and their `via`."""
        return {p for lst in lsts for p in (lst.target.netns, lst.target.via) if p}

    def remove(self, name: str) -> None:
        lsts = self.by_sandbox.pop(name, [])
        for lst in lsts:
            if lst.spec.protocol == "udp":
                self.udp.close_listener(lst)
            self.loop.remove(lst.sock.fileno())
            lst.sock.close()
            self.by_protocol[lst.spec.protocol] -= 1
        self.listeners -= len(lsts)
        still = self._netns_of(lst for ls in self.by_sandbox.values() for lst in ls)
        for path in self._netns_of(lsts) - still:
            self.tcp.drop_netns(path)  # its sockets would keep a removed sandbox's netns
            self.pool.forget(path)

    def _warm(self, t: Target, ports: tuple[PortSpec, ...]) -> None:
        """Ask for transparent sockets now: the reply routing is set up (or found missing)
        at publish time, not by the first client."""
        assert t.via is not None
        for kind in {p.protocol for p in ports if p.keep_client}:
            for fam, ip in ((4, t.ip4), (6, t.ip6)):
                if ip is None:
                    continue
                if kind == "tcp" and t.inside and self.pool.avail.inside(t.netns, fam):
                    self.pool.warm((t.netns, fam, kind, clientaddr.INSIDE))
                elif self.pool.avail.usable(t.via, fam):
                    self.pool.warm((t.via, fam, kind, clientaddr.VIA))

    def protocols(self) -> tuple[bool, bool]:
        """Whether TCP, UDP ports are published: the fd budget goes to those that are."""
        return self.by_protocol["tcp"] > 0, self.by_protocol["udp"] > 0
