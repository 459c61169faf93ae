"""Where a published port leads: a sandbox's netns and addresses, and the host-side listener."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from rootless.ports.spec import PortSpec

Candidate = tuple[int, str]  # (4 or 6, address to dial)


@dataclass(frozen=True)
class Target:
    sandbox: str
    netns: str
    ip4: IPv4Address | None
    ip6: IPv6Address | None

    def candidates(self, v4_client: bool) -> list[Candidate]:
        """The client's family first, the other as the fallback when the first is refused.

        A server that listens on 0.0.0.0 only is reached by v6 clients, one on `::` with
        IPV6_V6ONLY by v4 clients, and a dual-stack one by each in its own family.
        """
        v4 = [(4, str(self.ip4))] if self.ip4 else []
        v6 = [(6, str(self.ip6))] if self.ip6 else []
        return v4 + v6 if v4_client else v6 + v4


@dataclass(eq=False)
class Listener:
    sock: socket.socket
    spec: PortSpec
    host_port: int
    ctr_port: int
    target: Target
