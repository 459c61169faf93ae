"""Phase 2: burrow's forwarder (rootless.ports) serving one Podman container.

The same parts as burrow's own forwarder process (rootless.ports.forwarder): one netns.loop,
the port manager, the splice TCP proxy, the UDP proxy, the caps. What differs is the frame:
- the dialer is a thread of this process that entered the container's netns once (Podman
  already runs us inside its user and mount namespaces, so no nsenter and no second
  interpreter); it makes sockets there and passes them back over a SEQPACKET pair, so the
  listeners never leave the host netns (a thread that entered the container netns could
  not come back: spec/rootlessport.md §5);
- the process ends when ExitFD reaches EOF (conmon holds the write end), not with a holder;
- the control socket is Podman's (control.py), not burrow's.

Client addresses (rootless.ports.clientaddr): on a bridge network the container hangs off a
bridge in Podman's rootless netns, where we (uid 0 of Podman's user namespace) hold
CAP_NET_ADMIN; dialled from there (`via`) on a transparent socket bound to the client's
address, the container's server sees the real client, and its replies come back through that
netns's policy route. Loopback clients are dialled inside the container as before (it sees
its own address; rootless.ports.clientaddr decides per client). In slirp4netns mode there is
no such netns (the container's own would need rules the container can see): the dial stays
inside the container, which sees ChildIP itself, as upstream.
"""

from __future__ import annotations

import _socket
import gc
import glob
import ipaddress
import logging
import os
import resource
import signal
import socket
import threading
from collections.abc import Callable
from typing import TypeVar

from netns import nsenter, onlink
from netns.loop import Loop
from rootless.ports.budget import Guard
from rootless.ports.dialer import Dialer
from rootless.ports.fdlimit import raise_fd_limit
from rootless.ports.manager import PortManager
from rootless.ports.pool import DialerPool
from rootless.ports.spec import PortSpec
from rootless.ports.target import Listener, Target
from rootless.ports.tcp import TcpProxy
from rootless.ports.udp import UdpProxy
from rootless.rootlessport.config import Config
from rootless.rootlessport.control import ControlServer
from rootless.rootlessport.listen import Bound, ControlSocket

log = logging.getLogger("rootless.rootlessport")

T = TypeVar("T")
UDP_TIMEOUT = 90.0  # upstream's UDP conntrack timeout
UPSTREAM_RETRIES = 9  # rootlesskit's builtin child: 10 dials, the i-th then sleeping i x 5 ms


def rootless_netns(runtime: str | None) -> str | None:
    """Podman's rootless netns, the one netns that routes to every rootless bridge: 4.3's
    `$XDG_RUNTIME_DIR/netns/rootless-netns-<hash>`, 5.x's `.../containers/networks/
    rootless-netns/rootless-netns`. None unless exactly one exists (each Podman storage root
    has its own, and the config does not say which is ours)."""
    if not runtime or not runtime.startswith("/"):
        return None
    found = sorted(glob.glob(os.path.join(glob.escape(runtime), "netns", "rootless-netns-*")))
    v5 = os.path.join(runtime, "containers", "networks", "rootless-netns", "rootless-netns")
    found += [v5] if os.path.exists(v5) else []
    return os.path.normpath(found[0]) if len(found) == 1 else None


def _in_netns(netns: str, read: Callable[[], T]) -> T | None:
    """`read()` run by a short-lived thread that enters the netns (a thread's
    /proc/thread-self/net is its own netns's); None if it cannot."""
    found: list[T] = []

    def look() -> None:
        try:
            fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                nsenter.setns(fd)
            finally:
                os.close(fd)
            found.append(read())
        except (OSError, ValueError):
            pass

    t = threading.Thread(target=look, name="route-check", daemon=True)
    t.start()
    t.join(5)
    return found[0] if found else None


def has_default_route(netns: str, family: int) -> bool:
    """Whether the container's netns routes anywhere beyond its networks: without a default
    route (an --internal network) it could not answer a kept client address, so the dial
    stays inside it."""
    return bool(_in_netns(netns, lambda: onlink.has_default(family)))


def target(cfg: Config, child_ip: str, via: str | None) -> Target:
    """Where the ports lead: ChildIP in the container's netns, whatever the client's family
    (upstream dials ChildIP only); dialled from `via` when client addresses can be kept."""
    ip = ipaddress.ip_address(child_ip)
    keep = via is not None and not ip.is_loopback and has_default_route(cfg.netns_path, ip.version)
    return Target(cfg.container_id, cfg.netns_path,
                  ip if isinstance(ip, ipaddress.IPv4Address) else None,
                  ip if isinstance(ip, ipaddress.IPv6Address) else None,
                  via if keep else None,
                  # A client in the container's own subnets is dialled inside it (Target.onlink).
                  onlink=(_in_netns(cfg.netns_path, onlink.subnets) or ()) if keep else ())


def start_dialer(chan: socket.socket) -> threading.Thread:
    def run() -> None:
        try:
            Dialer(chan).run()
        except Exception:  # the forwarder sees the channel close and stops
            log.exception("dialer thread")
        finally:
            chan.close()

    t = threading.Thread(target=run, name="dialer", daemon=True)
    t.start()
    return t


class PodmanForwarder:
    """The parts wired together on one loop, for one container."""

    def __init__(self, cfg: Config, bound: list[Bound], ctl: ControlSocket | None) -> None:
        self.cfg = cfg
        self.loop = Loop()
        fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.guard = Guard(fd_limit, self._held, lambda: self.manager.protocols())
        self.chan, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        self.dialer = start_dialer(theirs)
        self.pool = DialerPool(self.loop, self.chan, self.guard.shed, self.stop,
                               max_pooled=max(4, fd_limit // 16))
        # Upstream dials 10 times (i x 5 ms apart) before it gives up on a connection: a
        # server that is starting or restarting in the container is not refused meanwhile.
        self.tcp = TcpProxy(self.loop, self.pool, self.guard, refused_retries=UPSTREAM_RETRIES)
        self.udp = UdpProxy(self.loop, self.pool, self.guard, UDP_TIMEOUT)
        self.manager = PortManager(self.loop, self.pool, self.tcp, self.udp, self.guard, self.stop)
        # Bridge mode only (RootlessCNI): the rootless netns routes to the container's bridge.
        self.via = rootless_netns(os.environ.get("XDG_RUNTIME_DIR")) if cfg.rootless_cni else None
        to = target(cfg, cfg.child_ip, self.via)
        self.manager.adopt(cfg.container_id, [
            Listener(adopt(b.sock), PortSpec.of(b.forward.host_ip, b.forward.host_port,
                                         b.forward.container_port, 1, b.forward.protocol),
                     b.forward.host_port, b.forward.container_port, to)
            for b in bound])
        self.ctl = ctl
        # ctl keeps the detached object: its close() then only unlinks the socket file.
        self.control = ControlServer(self.loop, adopt(ctl.sock), self.retarget) if ctl else None
        self.loop.add(cfg.exit_fd, lambda ev: self.stop())  # EOF: the container stopped
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.on_signal(sig, self.stop)

    def retarget(self, child_ip: str) -> None:
        """Podman's reload (network connect/disconnect). Podman may have torn its rootless
        netns down and made a new one at the same path meanwhile (4.3 does on a disconnect):
        the dialer's open fd and pooled sockets would still lead into the old one."""
        if self.via is not None:
            self.pool.forget(self.via)
        if self.cfg.rootless_cni:
            self.via = rootless_netns(os.environ.get("XDG_RUNTIME_DIR"))
        self.manager.retarget(self.cfg.container_id, target(self.cfg, child_ip, self.via))

    def _held(self) -> int:
        """fds held for no particular client: they come off the clients' budget."""
        return self.manager.listeners + self.pool.size + (len(self.control.conns) if self.control else 0)

    def stop(self) -> None:
        self.loop.stop()

    def close(self) -> None:
        if self.control is not None:
            self.control.close()
        if self.ctl is not None:
            self.ctl.close()  # unlinks the socket: a clean exit leaves nothing in rp/
        self.manager.remove(self.cfg.container_id)
        self.pool.close()
        self.chan.close()  # the dialer thread sees EOF and ends


def adopt(s: _socket.socket) -> socket.socket:
    """Phase 1's `_socket.socket` as the `socket.socket` the forwarder works with (same fd)."""
    out = socket.socket(fileno=s.detach())
    out.setblocking(False)  # the fd is O_NONBLOCK already; this tells the object
    return out


def serve(cfg: Config, bound: list[Bound], ctl: ControlSocket | None) -> int:
    """Forward until ExitFD reaches EOF; 0 on a clean stop."""
    raise_fd_limit()
    # The reply routing runs nft/iptables and ip; a Debian user's PATH (Podman's, passed on)
    # lacks the sbin dirs, as Podman itself knows when it runs netavark.
    path = [d for d in os.environ.get("PATH", "").split(":") if d]
    os.environ["PATH"] = ":".join(path + [d for d in ("/usr/sbin", "/sbin") if d not in path])
    fwd = PodmanForwarder(cfg, bound, ctl)
    gc.freeze()  # what start-up made lives on: keep it out of every later collection
    try:
        fwd.loop.run()
    finally:
        fwd.close()
    return 0
