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
"""

from __future__ import annotations

import gc
import ipaddress
import logging
import resource
import signal
import socket
import threading

from netns import proctitle
from netns.loop import Loop
from rootless.ports.budget import Guard
from rootless.ports.dialer import Dialer
from rootless.ports.forwarder import raise_fd_limit
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

UDP_TIMEOUT = 90.0  # upstream's UDP conntrack timeout


def target(cfg: Config, child_ip: str) -> Target:
    """Where the ports lead: ChildIP in the container's netns, whatever the client's family
    (upstream dials ChildIP only)."""
    ip = ipaddress.ip_address(child_ip)
    return Target(cfg.container_id, cfg.netns_path,
                  ip if isinstance(ip, ipaddress.IPv4Address) else None,
                  ip if isinstance(ip, ipaddress.IPv6Address) else None)


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
        self.tcp = TcpProxy(self.loop, self.pool, self.guard)
        self.udp = UdpProxy(self.loop, self.pool, self.guard, UDP_TIMEOUT)
        self.manager = PortManager(self.loop, self.pool, self.tcp, self.udp, self.guard, self.stop)
        to = target(cfg, cfg.child_ip)
        self.manager.adopt(cfg.container_id, [
            Listener(b.sock, PortSpec.of(b.forward.host_ip, b.forward.host_port,
                                         b.forward.container_port, 1, b.forward.protocol),
                     b.forward.host_port, b.forward.container_port, to)
            for b in bound])
        self.ctl = ctl
        self.control = ControlServer(self.loop, ctl.sock, self.retarget) if ctl else None
        self.loop.add(cfg.exit_fd, lambda ev: self.stop())  # EOF: the container stopped
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.on_signal(sig, self.stop)

    def retarget(self, child_ip: str) -> None:
        self.manager.retarget(self.cfg.container_id, target(self.cfg, child_ip))

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


def serve(cfg: Config, bound: list[Bound], ctl: ControlSocket | None) -> int:
    """Forward until ExitFD reaches EOF; 0 on a clean stop."""
    raise_fd_limit()
    proctitle.set_title(f"burrow-rootlessport {cfg.container_id[:12]}")
    fwd = PodmanForwarder(cfg, bound, ctl)
    gc.freeze()  # what start-up made lives on: keep it out of every later collection
    try:
        fwd.loop.run()
    finally:
        fwd.close()
    return 0
