"""The userspace port forwarder: listen on the host as the user, connect inside a sandbox.

One process per user world, one thread, one epoll loop (no thread per connection: that is
what capped the thread-per-connection prototype at ~840 conn/s):
- listeners live in the host netns;
- sockets for the sandbox side come from the dialer (rootless.ports.dialer) already created
  inside the sandbox netns, kept in a small pool, and are connected here, non-blocking;
- TCP bytes move with os.splice through a pipe per direction (zero-copy), half-close is
  passed on with shutdown(SHUT_WR), a refused backend resets the client at once;
- UDP is proxied per client flow, flows expire after `udp_timeout` idle seconds.

Control: JSON lines on a unix socket (`forwarder.sock`): add / remove / list / ping.
The process exits when the namespace holder dies (pidfd in the same epoll).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import resource
import select
import socket
import struct
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from rootless.ports.spec import PortSpec

# No SPLICE_F_MORE on the write side: it sets MSG_MORE, TCP then holds a sub-MSS tail until
# more data comes, and a request/response protocol stalls ~200 ms per message. Without it bulk
# throughput measured the same (splice already hands TCP up to a pipe's worth at once).
SPLICE = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
F_SETPIPE_SZ, F_GETPIPE_SZ = 1031, 1032
# Pipes start at the kernel's default size and grow to BIG_PIPE once a read fills one (a bulk
# flow: 1 MiB pipes measured ~20% faster than 64 KiB). The per-user pipe budget
# (fs.pipe-user-pages-soft, 64 MiB by default) is shared with every other program of the user,
# and a user over it gets 8 KiB pipes everywhere, so at most MAX_BIG_PIPES are big at once.
BIG_PIPE = 1 << 20
MAX_BIG_PIPES = 16
CHUNK = 1 << 20
POOL_LOW, POOL_BATCH = 8, 32
MAX_FDS_PER_MSG = 250  # SCM_MAX_FD is 253
UDP_QUEUE = 64  # datagrams held per new UDP flow while its socket comes from the dialer
ET = select.EPOLLET
RW = select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP | ET
# Edge-triggered: data to read on a socket feeds its outbound pipe, room to write drains the
# pipe into it. Pumping only the direction an event concerns saves failed splices.
READABLE = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
WRITABLE = select.EPOLLOUT | select.EPOLLHUP | select.EPOLLERR
LINGER_RST = struct.pack("ii", 1, 0)


def unprivileged_port_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1024


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


@dataclass
class Target:
    sandbox: str
    netns: str
    ip4: str | None
    ip6: str | None

    def pick(self, client_family: int) -> tuple[int, str] | None:
        """Same family as the client where the sandbox has it, else the other."""
        order = [(6, self.ip6), (4, self.ip4)] if client_family == socket.AF_INET6 \
            else [(4, self.ip4), (6, self.ip6)]
        for fam, ip in order:
            if ip:
                return fam, ip
        return None


@dataclass
class Listener:
    sock: socket.socket
    spec: PortSpec
    host_port: int
    ctr_port: int
    target: Target


@dataclass
class Pipe:
    r: int
    w: int
    cap: int
    pending: int = 0
    eof: bool = False
    done: bool = False


@dataclass
class TcpConn:
    a: socket.socket       # client (host side)
    b: socket.socket       # backend (in the sandbox)
    connected: bool = False
    ab: Pipe | None = None
    ba: Pipe | None = None


@dataclass
class UdpFlow:
    listener: Listener
    client: Any
    b: socket.socket
    last: float = field(default_factory=time.monotonic)


def _pipe() -> Pipe:
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    return Pipe(r, w, fcntl.fcntl(w, F_GETPIPE_SZ))


def _pipes() -> tuple[Pipe, Pipe]:
    first = _pipe()
    try:
        return first, _pipe()
    except OSError:
        os.close(first.r)
        os.close(first.w)
        raise


def raise_fd_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit, as Go programs (rootlessport) do by default.

    A TCP connection costs the forwarder 6 fds (2 sockets, 2 pipes), so the usual soft limit of
    1024 would cap it at ~170 connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        try:
            with open("/proc/sys/fs/nr_open") as f:
                hard = int(f.read())
        except (OSError, ValueError):
            hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError):
            pass  # keep the soft limit: clients beyond it are shed, see _shed


class Forwarder:
    def __init__(self, ctl_path: str, holder_pid: int, dialer: socket.socket,
                 udp_timeout: float) -> None:
        self.ep = select.epoll()
        self.handlers: dict[int, Callable[[int], None]] = {}
        self.listeners: dict[int, Listener] = {}
        self.by_sandbox: dict[str, list[Listener]] = {}
        self.targets: dict[str, Target] = {}
        self.conns: dict[int, TcpConn] = {}
        self.flows: dict[tuple[int, Any], UdpFlow] = {}
        self.flow_by_fd: dict[int, UdpFlow] = {}
        self.udp_opening: dict[tuple[int, Any], list[bytes]] = {}
        self.pools: dict[tuple[str, int, str], deque[socket.socket]] = {}
        self.waiting: dict[tuple[str, int, str], deque[Callable[[socket.socket | None], None]]] \
            = {}
        self.requests: dict[int, tuple[str, int, str]] = {}
        self.next_req = 0
        self.udp_timeout = udp_timeout
        self.big_pipes = 0
        # Kept free for accept() when out of fds: close it, accept, reset, reopen. Without it a
        # level-triggered listener with a queued connection would spin at 100% CPU.
        self.spare_fd: int | None = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        self.shed_logged = 0.0
        self.refused = 0  # clients reset for want of fds
        self.running = True
        self.dialer = dialer
        self._watch(dialer.fileno(), select.EPOLLIN, self._on_dialer)
        self.hfd = os.pidfd_open(holder_pid)
        self._watch(self.hfd, select.EPOLLIN, self._on_holder_exit)
        self.ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        if os.path.exists(ctl_path):
            os.unlink(ctl_path)
        self.ctl.bind(ctl_path)
        os.chmod(ctl_path, 0o600)
        self.ctl.listen(64)
        self._watch(self.ctl.fileno(), select.EPOLLIN, self._on_ctl_accept)
        self.ctl_bufs: dict[int, tuple[socket.socket, bytes]] = {}

    # -- plumbing --------------------------------------------------------------------------
    def _watch(self, fd: int, events: int, cb: Callable[[int], None]) -> None:
        self.handlers[fd] = cb
        self.ep.register(fd, events)

    def _unwatch(self, fd: int) -> None:
        if self.handlers.pop(fd, None) is not None:
            try:
                self.ep.unregister(fd)
            except OSError:
                pass

    def _on_holder_exit(self, ev: int) -> None:
        self.stop()

    def stop(self) -> None:
        self.running = False

    def run(self) -> None:
        last_sweep = time.monotonic()
        while self.running:
            for fd, ev in self.ep.poll(1.0):
                cb = self.handlers.get(fd)
                if cb is not None:
                    cb(ev)
            now = time.monotonic()
            if now - last_sweep >= min(1.0, self.udp_timeout / 2):
                last_sweep = now
                self._sweep(now)

    # -- control ---------------------------------------------------------------------------
    def _on_ctl_accept(self, ev: int) -> None:
        while True:
            try:
                c, _ = self.ctl.accept()
            except BlockingIOError:
                return
            c.setblocking(False)
            self.ctl_bufs[c.fileno()] = (c, b"")
            self._watch(c.fileno(), select.EPOLLIN, self._on_ctl_data)

    def _on_ctl_data(self, ev: int) -> None:
        for fd in [fd for fd, (c, _) in self.ctl_bufs.items()]:
            c, buf = self.ctl_bufs[fd]
            try:
                data = c.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                self._unwatch(fd)
                del self.ctl_bufs[fd]
                c.close()
                continue
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    reply = self.handle(json.loads(line))
                except Exception as e:  # a bad request must not kill the forwarder
                    reply = {"error": f"{type(e).__name__}: {e}"}
                c.setblocking(True)
                c.sendall(json.dumps(reply).encode() + b"\n")
                c.setblocking(False)
            self.ctl_bufs[fd] = (c, buf)

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid(), "tcp_connections": len(self.conns) // 2,
                    "udp_flows": len(self.flows), "big_pipes": self.big_pipes,
                    "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                    "refused_out_of_fds": self.refused}
        if op == "list":
            return {"ok": True, "ports": [
                {"sandbox": name, **lst[0].spec.to_json()} for name, lsts in
                sorted(self.by_sandbox.items()) for lst in self._group(lsts)]}
        if op == "add":
            return self.add(req)
        if op == "remove":
            self.remove(str(req["sandbox"]))
            return {"ok": True}
        if op == "shutdown":
            self.stop()
            return {"ok": True}
        return {"error": f"unknown op {op!r}"}

    @staticmethod
    def _group(lsts: list[Listener]) -> list[list[Listener]]:
        seen: dict[PortSpec, list[Listener]] = {}
        for lst in lsts:
            seen.setdefault(lst.spec, []).append(lst)
        return list(seen.values())

    def add(self, req: dict[str, Any]) -> dict[str, Any]:
        name = str(req["sandbox"])
        target = Target(name, str(req["netns"]), req.get("ip4"), req.get("ip6"))
        specs = [PortSpec.from_json(p) for p in req.get("ports", [])]
        made: list[Listener] = []
        try:
            for spec in specs:
                for hp, cp in spec.pairs():
                    for sock in self._bind(spec.host_ip, hp, spec.protocol):
                        made.append(Listener(sock, spec, hp, cp, target))
        except OSError as e:
            for lst in made:
                lst.sock.close()
            return {"error": bind_error(e, spec.host_ip, hp, spec.protocol)}
        self.targets[name] = target
        for lst in made:
            self.listeners[lst.sock.fileno()] = lst
            self.by_sandbox.setdefault(name, []).append(lst)
            self._watch(lst.sock.fileno(), select.EPOLLIN, partial(self._on_listener, lst))
        return {"ok": True}

    def _bind(self, ip: str, port: int, proto: str) -> list[socket.socket]:
        kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
        if ip:
            fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
            addrs = [(fam, ip)]
        else:
            addrs = [(socket.AF_INET6, "::")] if socket.has_ipv6 else [(socket.AF_INET,
                                                                         "0.0.0.0")]
        out: list[socket.socket] = []
        for fam, addr in addrs:
            try:
                s = socket.socket(fam, kind | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
            except OSError:
                if fam == socket.AF_INET6 and not ip:  # no IPv6 on this host
                    s = socket.socket(socket.AF_INET, kind | socket.SOCK_NONBLOCK)
                    fam, addr = socket.AF_INET, "0.0.0.0"
                else:
                    raise
            try:
                if fam == socket.AF_INET6 and not ip:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # v4 and v6
                if kind == socket.SOCK_STREAM:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((addr, port))
                if kind == socket.SOCK_STREAM:
                    s.listen(4096)
            except OSError:
                s.close()
                for o in out:
                    o.close()
                raise
            out.append(s)
        return out

    def remove(self, name: str) -> None:
        for lst in self.by_sandbox.pop(name, []):
            fd = lst.sock.fileno()
            self._unwatch(fd)
            self.listeners.pop(fd, None)
            lst.sock.close()
        for key, flow in list(self.flows.items()):
            if flow.listener.target.sandbox == name:
                self._close_flow(key)
        target = self.targets.pop(name, None)
        if target is not None:
            # Pooled sockets would keep the sandbox's netns alive after it is removed.
            for pkey in [k for k in self.pools if k[0] == target.netns]:
                for s in self.pools.pop(pkey):
                    s.close()
            self.dialer.send(json.dumps({"op": "forget", "netns": target.netns}).encode())

    # -- sockets from the dialer -----------------------------------------------------------
    def _get_socket(self, key: tuple[str, int, str],
                    cb: Callable[[socket.socket | None], None]) -> None:
        pool = self.pools.setdefault(key, deque())
        if pool:
            cb(pool.popleft())
        else:
            self.waiting.setdefault(key, deque()).append(cb)
        self._refill(key)

    def _refill(self, key: tuple[str, int, str]) -> None:
        """One request in flight per key, for what the waiters need plus a batch to spare."""
        want = len(self.waiting.get(key, ()))
        if (want or len(self.pools.get(key, ())) < POOL_LOW) and \
                key not in self.requests.values():
            self.next_req += 1
            self.requests[self.next_req] = key
            self.dialer.send(json.dumps({
                "id": self.next_req, "netns": key[0], "family": key[1], "type": key[2],
                "n": min(MAX_FDS_PER_MSG, want + POOL_BATCH)}).encode())

    def _on_dialer(self, ev: int) -> None:
        while True:
            try:
                msg, anc, _, _ = self.dialer.recvmsg(4096, socket.CMSG_SPACE(4 * 256),
                                                     socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            if not msg:
                self.stop()  # the dialer died: the namespace is going
                return
            fds: list[int] = []
            for level, kind, data in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds += [int.from_bytes(data[i:i + 4], sys.byteorder)
                            for i in range(0, len(data) - len(data) % 4, 4)]
            head = json.loads(msg)
            key = self.requests.pop(int(head["id"]), None)
            if key is None or key[0] not in {t.netns for t in self.targets.values()}:
                for fd in fds:
                    os.close(fd)
                continue
            pool = self.pools.setdefault(key, deque())
            pool.extend(socket.socket(fileno=fd) for fd in fds)
            waiters = self.waiting.get(key, deque())
            while waiters and pool:
                waiters.popleft()(pool.popleft())
            if head.get("error") or not fds:
                while waiters:
                    waiters.popleft()(None)
            else:
                # A burst can outrun one batch: without this, clients queued after it waited
                # for a socket until some later client came.
                self._refill(key)

    # -- TCP -------------------------------------------------------------------------------
    def _on_listener(self, lst: Listener, ev: int) -> None:
        if lst.spec.protocol == "tcp":
            self._accept_on(lst)
        else:
            self._udp_from_client(lst)

    def _accept_on(self, lst: Listener) -> None:
        while True:
            try:
                a, _ = lst.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno == errno.ECONNABORTED:
                    continue
                if e.errno in (errno.EMFILE, errno.ENFILE) and self._shed(lst.sock):
                    continue
                return
            a.setblocking(False)
            pick = lst.target.pick(a.family)
            if pick is None:
                self._reset(a)
                continue
            fam, ip = pick
            self._get_socket((lst.target.netns, fam, "tcp"),
                             partial(self._dial, a, ip, lst.ctr_port))

    def _dial(self, a: socket.socket, ip: str, port: int, b: socket.socket | None) -> None:
        if b is None:
            self._reset(a)
            return
        b.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        a.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = TcpConn(a, b)
        try:
            b.connect((ip, port))
            conn.connected = True
        except BlockingIOError:
            pass
        except OSError:
            b.close()
            self._reset(a)
            return
        self.conns[a.fileno()] = conn
        self.conns[b.fileno()] = conn
        self._watch(a.fileno(), RW, partial(self._on_conn_event, conn, True))
        self._watch(b.fileno(), RW, partial(self._on_conn_event, conn, False))
        if conn.connected:
            self._on_conn(conn, READABLE | WRITABLE, READABLE | WRITABLE)

    def _shed(self, listener: socket.socket) -> bool:
        """Out of fds: refuse (RST) one queued client with the spare fd. False if impossible."""
        now = time.monotonic()
        if now - self.shed_logged > 10:  # the log is $XDG_RUNTIME_DIR/burrow/log/forwarder.log
            self.shed_logged = now
            limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            print(f"forwarder: out of file descriptors (limit {limit}, {len(self.conns) // 2} "
                  "connections open): refusing new clients; raise the hard limit (`ulimit -Hn`, "
                  "limits.conf) and run `burrow down`", file=sys.stderr, flush=True)
        if self.spare_fd is None:
            return False
        os.close(self.spare_fd)
        self.spare_fd = None
        try:
            a, _ = listener.accept()
            self._reset(a)
            self.refused += 1
            return True
        except OSError:
            return False
        finally:
            try:
                self.spare_fd = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                pass

    @staticmethod
    def _reset(a: socket.socket) -> None:
        # RST, not FIN: the client learns at once that nothing answers behind the port.
        try:
            a.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
        except OSError:
            pass
        a.close()

    def _on_conn_event(self, c: TcpConn, client_side: bool, ev: int) -> None:
        if client_side:
            self._on_conn(c, ev, 0)
        else:
            self._on_conn(c, 0, ev)

    def _on_conn(self, c: TcpConn, ev_a: int, ev_b: int) -> None:
        if not c.connected:
            err = c.b.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err == 0:
                try:
                    c.b.getpeername()
                except OSError:
                    return  # still connecting
                c.connected = True
            else:
                self._close(c, reset=True)
                return
            ev_a = ev_b = READABLE | WRITABLE  # first pass: anything may be waiting
        if c.ab is None:
            try:
                c.ab, c.ba = _pipes()
            except OSError:  # out of fds: this client is refused, the others go on
                self.refused += 1
                self._close(c, reset=True)
                return
        assert c.ab is not None and c.ba is not None
        try:
            # Room to write matters only to a pipe stalled on it: epoll reports EPOLLOUT
            # alongside nearly every EPOLLIN, and a blind read would just fail with EAGAIN.
            if ev_a & READABLE or ev_b & WRITABLE and c.ab.pending:
                self._pump(c.a, c.b, c.ab)
            if ev_b & READABLE or ev_a & WRITABLE and c.ba.pending:
                self._pump(c.b, c.a, c.ba)
        except OSError:
            self._close(c, reset=True)
            return
        if c.ab.done and c.ba.done:
            self._close(c)

    def _pump(self, src: socket.socket, dst: socket.socket, p: Pipe) -> None:
        while not p.done:
            if p.pending == 0 and not p.eof:
                try:
                    n = os.splice(src.fileno(), p.w, CHUNK, flags=SPLICE)
                except BlockingIOError:
                    return
                if n == 0:
                    p.eof = True
                else:
                    p.pending += n
                    if n >= p.cap and p.cap < BIG_PIPE and self.big_pipes < MAX_BIG_PIPES:
                        self._grow(p)
            if p.pending:
                try:
                    n = os.splice(p.r, dst.fileno(), p.pending, flags=SPLICE)
                except BlockingIOError:
                    return
                p.pending -= n
                continue
            if p.eof:
                try:
                    dst.shutdown(socket.SHUT_WR)  # half-close: pass the FIN on
                except OSError:
                    pass
                p.done = True

    def _grow(self, p: Pipe) -> None:
        try:
            p.cap = fcntl.fcntl(p.w, F_SETPIPE_SZ, BIG_PIPE)
            self.big_pipes += 1
        except OSError:
            pass  # over the user's pipe budget: the small pipe still works

    def _close(self, c: TcpConn, reset: bool = False) -> None:
        for s in (c.a, c.b):
            fd = s.fileno()
            if fd < 0:
                continue
            self._unwatch(fd)
            self.conns.pop(fd, None)
            if reset:
                self._reset(s)
            else:
                s.close()
        for p in (c.ab, c.ba):
            if p is not None:
                os.close(p.r)
                os.close(p.w)
                if p.cap >= BIG_PIPE:
                    self.big_pipes -= 1
        c.ab = c.ba = None

    # -- UDP -------------------------------------------------------------------------------
    def _udp_from_client(self, lst: Listener) -> None:
        while True:
            try:
                data, addr = lst.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            key = (lst.sock.fileno(), addr)
            flow = self.flows.get(key)
            if flow is not None:
                flow.last = time.monotonic()
                try:
                    flow.b.send(data)
                except OSError:
                    pass
                continue
            queued = self.udp_opening.get(key)
            if queued is not None:
                # Its socket is still on the way from the dialer: without this queue each
                # datagram would open a flow of its own (the server would see several source
                # ports) and all but the last would leak.
                if len(queued) < UDP_QUEUE:
                    queued.append(data)
                continue
            pick = lst.target.pick(lst.sock.family if not _is_mapped(addr) else socket.AF_INET)
            if pick is None:
                continue
            fam, ip = pick
            self.udp_opening[key] = [data]
            self._get_socket((lst.target.netns, fam, "udp"),
                             partial(self._udp_open, key, lst, ip))

    def _udp_open(self, key: tuple[int, Any], lst: Listener, ip: str,
                  b: socket.socket | None) -> None:
        queued = self.udp_opening.pop(key, [])
        if b is None:
            return
        if lst.sock.fileno() < 0:  # the port was removed meanwhile
            b.close()
            return
        try:
            b.connect((ip, lst.ctr_port))
            for data in queued:
                b.send(data)
        except OSError:
            b.close()
            return
        flow = UdpFlow(lst, key[1], b)
        self.flows[key] = flow
        self.flow_by_fd[b.fileno()] = flow
        self._watch(b.fileno(), select.EPOLLIN, partial(self._udp_from_backend, key))

    def _udp_from_backend(self, key: tuple[int, Any], ev: int = 0) -> None:
        flow = self.flows.get(key)
        if flow is None:
            return
        while True:
            try:
                data = flow.b.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ICMP port unreachable: the backend is down
                self._close_flow(key)
                return
            flow.last = time.monotonic()
            try:
                flow.listener.sock.sendto(data, flow.client)
            except OSError:
                pass

    def _close_flow(self, key: tuple[int, Any]) -> None:
        flow = self.flows.pop(key, None)
        if flow is None:
            return
        fd = flow.b.fileno()
        self.flow_by_fd.pop(fd, None)
        self._unwatch(fd)
        flow.b.close()

    def _sweep(self, now: float) -> None:
        for key, flow in list(self.flows.items()):
            if now - flow.last > self.udp_timeout:
                self._close_flow(key)


def _is_mapped(addr: Any) -> bool:
    return isinstance(addr, tuple) and isinstance(addr[0], str) and \
        addr[0].startswith("::ffff:")


def main(argv: list[str]) -> int:
    """forwarder STATE_DIR HOLDER_PID [UDP_TIMEOUT]"""
    state, holder = argv[0], int(argv[1])
    udp_timeout = float(argv[2]) if len(argv) > 2 else 60.0
    raise_fd_limit()  # before the dialer starts: it inherits the limit
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    dialer = subprocess.Popen(
        ["nsenter", "--preserve-credentials", "-U", "-m", "-p", "-t", str(holder), "--",
         sys.executable, "-m", "rootless.ports.dialer", str(child.fileno())],
        pass_fds=[child.fileno()], stdin=subprocess.DEVNULL, cwd="/",
    )
    child.close()
    fwd = Forwarder(os.path.join(state, "forwarder.sock"), holder, parent, udp_timeout)
    # Ready only after the control socket is bound: the launcher waits for it.
    print("ready", flush=True)
    try:
        fwd.run()
    finally:
        parent.close()
        try:
            dialer.wait(timeout=2)
        except subprocess.TimeoutExpired:
            dialer.kill()
        os.unlink(os.path.join(state, "forwarder.sock"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
