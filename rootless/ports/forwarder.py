"""The userspace port forwarder: listen on the host as the user, connect inside a sandbox.

One process per user world, one thread, one event loop (netns.loop, shared with the DNS
server), put together from parts along rootlesskit's lines:
- rootless.ports.manager: add / list / remove published ports (the port manager);
- rootless.ports.ctlserver: the control socket (`StatePaths.forwarder_socket`), typed messages;
- rootless.ports.pool: sockets made inside sandbox netns by the dialer process;
- rootless.ports.tcp / udp: the proxies (splice for TCP), capped per client and in total by
  rootless.ports.budget.
The process exits when the namespace holder dies (its pidfd is in the same loop) or the
dialer does.
"""

from __future__ import annotations

import gc
import logging
import os
import pwd
import resource
import signal
import socket
import subprocess
import sys

from netns import logs, proctitle
from netns.loop import Loop
from rootless.ports.budget import Guard
from rootless.ports.ctlserver import ControlServer
from rootless.ports.fdlimit import raise_fd_limit
from rootless.ports.manager import PortManager
from rootless.ports.pool import DialerPool
from rootless.ports.splice import BIG_PIPE, F_GETPIPE_SZ, MAX_BIG_PIPES
from rootless.ports.tcp import TcpProxy
from rootless.ports.udp import UdpProxy

__all__ = ["BIG_PIPE", "F_GETPIPE_SZ", "MAX_BIG_PIPES", "Forwarder", "main", "raise_fd_limit"]
log = logging.getLogger("rootless.ports")


class Forwarder:
    """The parts wired together on one loop."""

    def __init__(self, ctl_path: str, holder_pid: int, dialer: socket.socket,
                 udp_timeout: float) -> None:
        self.loop = Loop()
        fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.guard = Guard(fd_limit, self._held, lambda: self.manager.protocols())
        self.pool = DialerPool(self.loop, dialer, self.guard.shed, self.stop,
                               max_pooled=max(4, fd_limit // 16))
        self.tcp = TcpProxy(self.loop, self.pool, self.guard)
        self.udp = UdpProxy(self.loop, self.pool, self.guard, udp_timeout)
        self.manager = PortManager(self.loop, self.pool, self.tcp, self.udp, self.guard, self.stop)
        self.holder = os.pidfd_open(holder_pid)
        self.loop.add(self.holder, lambda ev: self.stop())
        self.ctl = ControlServer(self.loop, ctl_path, self.guard, self.manager.handle,
                                 self.pool.drop_one)
        # The counts even when the control socket cannot be reached (out of fds): in the log.
        self.loop.on_signal(signal.SIGUSR1, self._log_stats)

    def _log_stats(self) -> None:
        log.warning("stats: %s; pooled %s; control connections %d", self.manager.stats(),
                    {k: len(v) for k, v in self.pool.pools.items()}, len(self.ctl.conns))

    def _held(self) -> int:
        """fds held for no particular client: they come off the clients' budget."""
        return (self.manager.listeners + self.pool.size + len(self.ctl.conns)
                + self.tcp.big.spare_fds)

    def stop(self) -> None:
        self.loop.stop()

    def run(self) -> None:
        self.loop.run()

    def close(self) -> None:
        self.ctl.close()
        self.pool.close()
        os.close(self.holder)


def _user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def start_dialer(holder: int) -> tuple[socket.socket, subprocess.Popen[bytes]]:
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    dialer = subprocess.Popen(
        ["nsenter", "--preserve-credentials", "-U", "-m", "-p", "-t", str(holder), "--",
         sys.executable, "-m", "rootless.ports.dialer", str(child.fileno())],
        pass_fds=[child.fileno()], stdin=subprocess.DEVNULL, cwd="/",
    )
    child.close()
    return parent, dialer


def main(argv: list[str]) -> int:
    """forwarder CONTROL_SOCKET HOLDER_PID [UDP_TIMEOUT] (paths from rootless.paths)"""
    path, holder = argv[0], int(argv[1])
    udp_timeout = float(argv[2]) if len(argv) > 2 else 60.0
    proctitle.set_title(f"burrow forwarder {_user()}")
    logs.configure("burrow-forwarder", stream=sys.stderr)  # stderr is log/forwarder.log
    raise_fd_limit()  # before the dialer starts: it inherits the limit
    chan, dialer = start_dialer(holder)
    fwd = Forwarder(path, holder, chan, udp_timeout)
    # Ready only after the control socket is bound: the launcher waits for it.
    print("ready", flush=True)
    log.info("forwarding for holder %d, fd limit %d", holder, fwd.guard.fd_limit)
    gc.freeze()  # what start-up made lives on: keep it out of every later collection
    try:
        fwd.run()
    finally:
        fwd.close()
        chan.close()
        try:
            dialer.wait(timeout=2)
        except subprocess.TimeoutExpired:
            dialer.kill()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
