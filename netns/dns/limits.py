"""What one peer (a container's source IP; every other source is one peer, table.OTHERS) may
make burrow-dns hold, in total and per client, and the counts of what was shed, published as a
small JSON file for `burrow status`.

Everything a peer can make the server allocate is capped here: TCP connections, and upstream
queries in flight (each UDP one is a table entry, each TCP one a socket). What goes over a cap
is shed (a UDP query dropped, a TCP query answered SERVFAIL, a connection closed) and counted;
log lines about it are rate-limited, so a flood cannot fill the disk either. The UDP sockets
to upstream servers are capped here too (a small pool per server, each socket retired after a
few queries or seconds for source-port entropy, netns/dns/udpool.py), and so are all of them
together: every socket is an fd (cli.py raises the fd limit to the hard limit for these caps).

The stats file (`statefiles.DNS_STATS`, a dotfile inside the config dir, so neither burrow-dns
nor aardvark-dns takes it for a network) is rewritten atomically at most once a second when
something changed, and at once on SIGUSR1. Fields (all counts since start):

    pid, updated (unix time), listen (addresses served), networks,
    tcp_connections, upstream_pending, upstream_udp_sockets (gauges, at `updated`),
    shed: {tcp_total, tcp_per_client, tcp_evicted, tcp_timeout, pending_total,
           pending_per_client, tcp_upstream_total, udp_sockets_total}, accept_errors, faults,
    upstream_dropped: {unknown_id, not_a_reply, wrong_question} (upstream messages that were
           not the answer to a query in flight, netns/dns/match.py: late, stray or forged),
    limits: the caps in force.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields

from netns.dns import owned
from netns.dns.match import DROP_KINDS, UNKNOWN_ID

log = logging.getLogger("netns.dns")

LOG_EVERY = 10.0  # seconds between two log lines of one kind (everything is counted)
SHED_KINDS = ("tcp_total", "tcp_per_client", "tcp_evicted", "tcp_timeout", "pending_total",
              "pending_per_client", "tcp_upstream_total", "udp_sockets_total")
ENV_PREFIX = "BURROW_DNS_"


class LimitError(ValueError):
    """A limit from the environment that is not a positive number."""


@dataclass(frozen=True)
class Limits:
    tcp_total: int = 512  # client TCP connections
    tcp_per_client: int = 16
    tcp_timeout: float = 3.0  # a whole message must arrive within this (aardvark HEAD: 3 s)
    tcp_pending_per_conn: int = 32  # queries in flight on one connection before we stop reading
    tcp_out_max: int = 64 << 10  # unread replies buffered per connection before we stop reading
    pending_total: int = 16384  # upstream queries in flight
    # dnsperf's 10 clients x 100 outstanding (scripts/bench) share one source address.
    pending_per_client: int = 1024
    tcp_upstream_total: int = 256  # upstream TCP connections (one socket each)
    # UDP to upstreams (netns/dns/udpool.py). A socket's port is known to whoever saw one
    # query leave, and kept by an off-path attacker who found it: so it serves a few queries
    # for a few seconds at most. Each replacement costs a socket(), connect() and close().
    udp_pool: int = 8  # sockets per upstream server a query picks from at random
    udp_socket_queries: int = 64  # queries sent from one socket before it is retired
    udp_socket_seconds: float = 10.0  # and its age at most (idle ones are closed then too)
    udp_pool_total: int = 32  # one upstream's, retired ones still draining included
    udp_sockets_total: int = 256  # all upstreams'

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Limits:
        """`BURROW_DNS_TCP_TOTAL=...` etc. override a field (read once, at start)."""
        values: dict[str, float | int] = {}
        for f in fields(cls):
            text = env.get(ENV_PREFIX + f.name.upper())
            if not text:
                continue
            kind = float if f.type in ("float", float) else int
            try:
                value = kind(text)
            except ValueError:
                raise LimitError(f"{ENV_PREFIX}{f.name.upper()}={text!r}: not a number") from None
            if value <= 0:
                raise LimitError(f"{ENV_PREFIX}{f.name.upper()}={text!r}: must be positive")
            values[f.name] = value
        return cls(**values)  # type: ignore[arg-type]


class Stats:
    """Counters, rate-limited log lines about faults and shedding, and the stats file."""

    def __init__(self, path: str | None, limits: Limits) -> None:
        self.path = path
        self.limits = limits
        self.shed_counts = dict.fromkeys(SHED_KINDS, 0)
        self.faults = 0
        self.accept_errors = 0
        self.dropped = dict.fromkeys(DROP_KINDS, 0)
        self.gauges: Callable[[], dict[str, object]] = dict
        self._logged: dict[str, float] = {}
        self._written: dict[str, object] | None = None
        self.ident: owned.Ident | None = None  # the file we last wrote

    def _log_limited(self, kind: str, level: int, msg: str, *args: object,
                     exc: BaseException | None = None) -> None:
        now = time.monotonic()
        if now - self._logged.get(kind, -LOG_EVERY) >= LOG_EVERY:
            self._logged[kind] = now
            log.log(level, msg, *args, exc_info=exc)

    def fault(self, where: str, exc: BaseException) -> None:
        """A handler failed on one packet or connection; that one was dropped, nothing else."""
        self.faults += 1
        self._log_limited("fault:" + where, logging.ERROR,
                          "%s: dropped one request after an internal error (%d so far): %r",
                          where, self.faults, exc, exc=exc)

    def shed(self, kind: str, client: str, quiet: bool = False) -> None:
        """Count what a cap made us drop; `quiet` for the ordinary (an idle client timed out)."""
        self.shed_counts[kind] += 1
        if not quiet:
            self._log_limited("shed:" + kind, logging.WARNING,
                              "over the %s limit: shed a request from %s (%d so far)",
                              kind, client, self.shed_counts[kind])

    def reply_dropped(self, kind: str, server: str) -> None:
        """An upstream message that answers nothing in flight (match.py) was dropped. A late
        answer to a query that timed out is ordinary; the other kinds are stray or forged."""
        self.dropped[kind] += 1
        if kind != UNKNOWN_ID:
            self._log_limited("dropped:" + kind, logging.WARNING,
                              "dropped a message from upstream %s: %s (%d so far)",
                              server, kind, self.dropped[kind])

    def accept_error(self, exc: OSError) -> None:
        self.accept_errors += 1
        self._log_limited("accept", logging.WARNING,
                          "cannot accept TCP connections: %s; pausing the listener (%d so far)",
                          exc.strerror, self.accept_errors)

    def snapshot(self) -> dict[str, object]:
        return {
            **self.gauges(), "shed": dict(self.shed_counts), "accept_errors": self.accept_errors,
            "faults": self.faults, "upstream_dropped": dict(self.dropped),
            "limits": asdict(self.limits),
        }

    def write(self, force: bool = False) -> None:
        """Rewrite the file if anything changed (or `force`); a failure is logged, not raised."""
        if self.path is None:
            return
        snap = self.snapshot()
        if snap == self._written and not force:
            return
        body = {"pid": os.getpid(), "updated": round(time.time(), 3), **snap}
        tmp = self.path + ".tmp"
        # Under the config dir's lock (netns/dns/owned.py): another server of the directory may
        # be exiting and checks that the file is its own before removing it. Never waited for
        # long in the event loop: busy, the next tick writes.
        with owned.dir_lock(os.path.dirname(self.path), timeout=0.05 if force else 0) as ok:
            if not ok:
                return
            try:
                with open(tmp, "w", encoding="utf-8") as f:
                    json.dump(body, f, indent=1, sort_keys=True)
                    f.write("\n")
                    st = os.fstat(f.fileno())
                os.replace(tmp, self.path)
            except OSError as exc:
                self._log_limited("stats", logging.WARNING, "cannot write %s: %s", self.path, exc)
                return
        self.ident = (st.st_dev, st.st_ino)
        self._written = snap

    def remove(self) -> None:
        """Remove the file if it is still the one we wrote. Call under owned.dir_lock."""
        if self.path is not None:
            owned.unlink_if(self.path, self.ident)
