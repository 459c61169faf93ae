"""Where a published port leads: a sandbox's netns and addresses, and the host-side listener."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

from rootless.ports.spec import PortSpec

Candidate = tuple[int, str]  # (4 or 6, address to dial)


@dataclass(frozen=True)
class Target:
    sandbox: str
    netns: str
    ip4: IPv4Address | None
    ip6: IPv6Address | None
    # Both orders, spelled once: they are asked for on every accept.
    _v4_first: tuple[Candidate, ...] = field(init=False, repr=False, compare=False)
    _v6_first: tuple[Candidate, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        v4 = ((4, str(self.ip4)),) if self.ip4 else ()
        v6 = ((6, str(self.ip6)),) if self.ip6 else ()
        object.__setattr__(self, "_v4_first", v4 + v6)
        object.__setattr__(self, "_v6_first", v6 + v4)

    def candidates(self, v4_client: bool) -> list[Candidate]:
        """The client's family first, the other as the fallback when the first is refused.

        A server that listens on 0.0.0.0 only is reached by v6 clients, one on `::` with
        IPV6_V6ONLY by v4 clients, and a dual-stack one by each in its own family.
        """
        return list(self._v4_first if v4_client else self._v6_first)


@dataclass(eq=False)
class Listener:
    sock: socket.socket
    spec: PortSpec
    host_port: int
    ctr_port: int
    target: Target
