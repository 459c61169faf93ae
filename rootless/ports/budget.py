"""What peers may make the forwarder hold, and what it sheds when they ask for more.

Every resource a client can make the forwarder allocate is capped per client and in total:
TCP connections (up to 6 fds each: two sockets, two pipes), dials still waiting for a socket or
a connect (2 fds), UDP flows (1 fd). The totals come from the fd limit, minus what the
forwarder holds for itself (listeners, pooled sockets, control connections), so clients run
into a cap, are refused or shed and counted, long before `accept` or `pipe` could fail with
EMFILE. A client is an IPv4 address, or an IPv6 /64 (one host usually owns a whole /64); a
v4-mapped address on a dual-stack socket is its IPv4 address.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, fields

log = logging.getLogger("rootless.ports")

RESERVE_FDS = 48  # stdio, log, epoll, wake pipe, pidfd, dialer channel, spare fd, slack
HELD_STEP = 16  # caps are recomputed when the fds held for no client move by this much
TCP_FDS, DIAL_FDS, UDP_FDS = 6, 2, 1
MAX_DIALS = 1024  # dials in flight: each may hold a SYN for minutes to a silent address
PER_CLIENT_SHARE = 3  # quarters of a total one client may take: others keep a quarter
CONTROL_CONNS = 16
OUT_OF_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
LINGER_RST = struct.pack("ii", 1, 0)
LOG_EVERY = 10.0


def client_of(host: str) -> tuple[str, bool]:
    """(accounting key, is an IPv4 client) of a peer address as the socket module gives it."""
    if "." in host and (":" not in host or host.startswith("::ffff:")):
        return host.rpartition(":")[2], True
    try:
        packed = socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
    except OSError:
        return host, False
    return packed[:8].hex(), False


@dataclass(frozen=True)
class Caps:
    tcp_total: int
    tcp_per_client: int
    dial_total: int
    dial_per_client: int
    udp_total: int
    udp_per_client: int

    @classmethod
    def for_fds(cls, fd_limit: int, held: int, tcp_ports: bool = True,
                udp_ports: bool = True) -> Caps:
        """Two thirds of the free fds for TCP and one third for UDP, or all of them for the
        one protocol that has published ports."""
        free = max(0, fd_limit - RESERVE_FDS - held)
        tcp_part = 3 if not udp_ports else (2 if tcp_ports else 0)
        tcp = max(1, free * tcp_part // 3 // TCP_FDS)
        udp = max(1, free * (3 - tcp_part) // 3 // UDP_FDS)
        dial = max(1, min(tcp, MAX_DIALS))
        return cls(tcp, _share(tcp), dial, _share(dial), udp, _share(udp))

    def to_json(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _share(total: int) -> int:
    return max(1, total * PER_CLIENT_SHARE // 4)


class Tally:
    """Live count per client and in total."""

    __slots__ = ("total", "by_client")

    def __init__(self) -> None:
        self.total = 0
        self.by_client: dict[str, int] = {}

    def of(self, client: str) -> int:
        return self.by_client.get(client, 0)

    def add(self, client: str) -> None:
        self.total += 1
        self.by_client[client] = self.by_client.get(client, 0) + 1

    def drop(self, client: str) -> None:
        self.total -= 1
        n = self.by_client.get(client, 0) - 1
        if n > 0:
            self.by_client[client] = n
        else:
            self.by_client.pop(client, None)


@dataclass
class Shed:
    """What was refused or shed, and why: `burrow status` shows these."""

    tcp_refused_per_client: int = 0
    tcp_refused_total: int = 0
    dial_refused_per_client: int = 0
    dial_refused_total: int = 0
    dial_failed: int = 0  # no socket from the dialer, or refused on every address
    udp_flows_shed_per_client: int = 0
    udp_flows_shed_total: int = 0
    udp_datagrams_dropped: int = 0
    control_shed: int = 0
    out_of_fds: int = 0  # EMFILE/ENFILE met despite the caps (other processes, pipes)

    def to_json(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def for_want_of_fds(self) -> int:
        """Clients refused because the fd budget as a whole was spent."""
        return self.tcp_refused_total + self.dial_refused_total + self.out_of_fds


class RateLog:
    """One log line per LOG_EVERY seconds and kind of trouble, not one per client."""

    def __init__(self) -> None:
        self.last: dict[str, float] = {}

    def warn(self, kind: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self.last.get(kind, -LOG_EVERY) >= LOG_EVERY:
            self.last[kind] = now
            log.warning(msg, *args)


def reset(s: socket.socket) -> None:
    """Close with RST, not FIN: the client learns at once that nothing answers."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
    except OSError:
        pass
    s.close()


class Spare:
    """One fd kept free so a listener's queued client can still be taken off and refused.

    Out of fds, a level-triggered listener with a connection in its queue would otherwise wake
    the loop forever (100% CPU) and no one would learn they are not served.
    """

    def __init__(self) -> None:
        self.fd: int | None = self._open()

    @staticmethod
    def _open() -> int | None:
        try:
            return os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None

    def refuse_one(self, listener: socket.socket) -> bool:
        """Accept one queued client with the spare fd and reset it; False if none could be."""
        if self.fd is None:
            self.fd = self._open()
            return False
        os.close(self.fd)
        self.fd = None
        try:
            c, _ = listener.accept()
        except OSError:
            return False
        else:
            reset(c)
            return True
        finally:
            self.fd = self._open()


class Guard:
    """The caps, the counts of what was shed, and the fd reserve, shared by TCP and UDP."""

    def __init__(self, fd_limit: int, held: Callable[[], int],
                 protocols: Callable[[], tuple[bool, bool]] = lambda: (True, True)) -> None:
        self.fd_limit = fd_limit
        self.held = held  # fds the forwarder holds for no client: listeners, pool, control
        self.protocols = protocols  # whether TCP, UDP ports are published
        self.shed = Shed()
        self.ratelog = RateLog()
        self.spare = Spare()
        self._caps_for: tuple[int, bool, bool] = (-1, True, True)
        self._caps = Caps.for_fds(fd_limit, 0)

    client_of = staticmethod(client_of)

    def caps(self) -> Caps:
        """Asked on every accept and new flow, so cached while the held fds barely move
        (HELD_STEP more held than counted fits in RESERVE_FDS)."""
        key = (self.held() // HELD_STEP, *self.protocols())
        if key != self._caps_for:
            self._caps_for = key
            self._caps = Caps.for_fds(self.fd_limit, (key[0] + 1) * HELD_STEP, key[1], key[2])
        return self._caps

    def admit_tcp(self, conns: Tally, dials: Tally, client: str) -> bool:
        """Asked on every accept: the usual answer (under every cap) in one test."""
        caps = self.caps()
        if (conns.total < caps.tcp_total and dials.total < caps.dial_total
                and conns.by_client.get(client, 0) < caps.tcp_per_client
                and dials.by_client.get(client, 0) < caps.dial_per_client):
            return True
        return self._refuse_tcp(caps, conns, dials, client)

    def _refuse_tcp(self, caps: Caps, conns: Tally, dials: Tally, client: str) -> bool:
        """Which cap refuses client (counted in shed, logged at a rate); True if none does."""
        shed = self.shed
        if conns.total >= caps.tcp_total:
            shed.tcp_refused_total += 1
            self.out_of_fds_log(conns.total)
        elif conns.of(client) >= caps.tcp_per_client:
            shed.tcp_refused_per_client += 1
            self.ratelog.warn("tcp-client", "a client holds %d TCP connections, its cap (fd "
                              "limit %d; a quarter of the budget is kept for other clients): "
                              "refusing its new ones", caps.tcp_per_client, self.fd_limit)
        elif dials.total >= caps.dial_total:
            shed.dial_refused_total += 1
            self.out_of_fds_log(conns.total)
        elif dials.of(client) >= caps.dial_per_client:
            shed.dial_refused_per_client += 1
            self.ratelog.warn("dial-client", "a client has %d connections still dialling the "
                              "sandbox, its cap: refusing its new ones", caps.dial_per_client)
        else:
            return True
        return False

    def out_of_fds_log(self, conns: int) -> None:
        self.ratelog.warn("fds", "out of file descriptors (limit %d, %d connections open): "
                          "refusing new clients; raise the hard limit (`ulimit -Hn`, "
                          "limits.conf) and run `burrow down`", self.fd_limit, conns)

    def out_of_fds(self, listener: socket.socket, conns: int) -> bool:
        """accept() met EMFILE/ENFILE: refuse one queued client; False if that failed too."""
        self.shed.out_of_fds += 1
        self.out_of_fds_log(conns)
        return self.spare.refuse_one(listener)
