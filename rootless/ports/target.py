"""Where a published port leads: a sandbox's netns and addresses, and the host-side listener."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from rootless.ports.clientaddr import INSIDE, PLAIN, VIA, Availability, Plan, client_ip
from rootless.ports.spec import PortSpec

Candidate = tuple[int, str]  # (4 or 6, address to dial)
PLAN_CACHE = 1024  # clients whose plans are kept; a spray of addresses just starts it afresh


@dataclass(frozen=True)
class Target:
    sandbox: str
    netns: str
    ip4: IPv4Address | None
    ip6: IPv6Address | None
    via: str | None = None  # the user's netns: dials from there can keep the client address
    # TCP keeps the client address with dials inside the sandbox itself (clientaddr INSIDE):
    # burrow's own sandboxes; burrow-rootlessport leaves a Podman container's netns alone.
    inside: bool = False
    # The sandbox's own subnets: it answers a client inside one over its link, never back
    # through `via`, so a dial from `via` bound to that address got no reply (UDP, and every
    # burrow-rootlessport dial, from a client at 10.88.0.7 to a sandbox at 10.88.0.2).
    onlink: tuple[IPv4Network | IPv6Network, ...] = ()
    # Both orders, spelled once: they are asked for on every accept.
    _v4_first: tuple[Candidate, ...] = field(init=False, repr=False, compare=False)
    _v6_first: tuple[Candidate, ...] = field(init=False, repr=False, compare=False)
    _plain: tuple[tuple[Plan, ...], tuple[Plan, ...]] = field(init=False, repr=False,
                                                              compare=False)
    # A TCP client's plans, made once per address (8.6 us each time, measured: most of it
    # parsing the address for `reaches`): by (host, v4_client, Availability.version).
    _cache: dict[tuple[str, bool, int], tuple[Plan, ...]] = field(
        init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        v4 = ((4, str(self.ip4)),) if self.ip4 else ()
        v6 = ((6, str(self.ip6)),) if self.ip6 else ()
        object.__setattr__(self, "_v4_first", v4 + v6)
        object.__setattr__(self, "_v6_first", v6 + v4)
        object.__setattr__(self, "_plain", tuple(
            tuple(Plan(self.netns, fam, PLAIN, ip) for fam, ip in order)
            for order in (v6 + v4, v4 + v6)))

    def candidates(self, v4_client: bool) -> list[Candidate]:
        """The client's family first, the other as the fallback when the first is refused.

        A server that listens on 0.0.0.0 only is reached by v6 clients, one on `::` with
        IPV6_V6ONLY by v4 clients, and a dual-stack one by each in its own family.
        """
        return list(self._v4_first if v4_client else self._v6_first)

    def plans(self, host: str, port: int, v4_client: bool, keep: bool,
              avail: Availability, tcp: bool = False) -> list[Plan]:
        """How to dial for a client at host:port, in the order of `candidates`.

        Keeping the client's address (`keep`, and a `via` netns: the sandbox is routed): the
        client's own family dials bound to its address, for TCP of an `inside` target inside
        the sandbox, else (or where that set-up failed) from `via` whose set-up has not
        failed for the family; each falls back to the next. Otherwise (a loopback or
        link-local client, the other family, or not kept) the dial is made inside the
        sandbox, as before: the sandbox sees its own address."""
        if not keep or self.via is None:
            return list(self._plain[v4_client])
        if port or not tcp:  # the client's port is in them
            return self._plans(host, port, v4_client, avail, tcp)
        key = (host, v4_client, avail.version)
        got = self._cache.get(key)
        if got is None:
            if len(self._cache) >= PLAN_CACHE:
                self._cache.clear()
            got = self._cache[key] = tuple(self._plans(host, 0, v4_client, avail, True))
        return list(got)

    def _plans(self, host: str, port: int, v4_client: bool, avail: Availability,
               tcp: bool) -> list[Plan]:
        via = self.via
        client = client_ip(host)
        if via is None or client is None:
            return list(self._plain[v4_client])
        out = []
        for plain in self._plain[v4_client]:
            fam, ip = plain.family, plain.ip
            p = plain
            if fam == client[1]:
                bind = (client[0], port)
                if avail.usable(via, fam) and not self.reaches(client[0]):
                    p = Plan(via, fam, VIA, ip, bind, plain)
                if tcp and self.inside and avail.inside(self.netns, fam):
                    p = Plan(self.netns, fam, INSIDE, ip, bind, p)
            out.append(p)
        return out

    def reaches(self, host: str) -> bool:
        """Whether `host` is in one of the sandbox's own subnets (see `onlink`)."""
        if not self.onlink:
            return False
        ip = ip_address(host)
        return any(ip in net for net in self.onlink)


@dataclass(eq=False)
class Listener:
    sock: socket.socket
    spec: PortSpec
    host_port: int
    ctr_port: int
    target: Target

