"""Parse `-p [IP:]HOST[-END]:CTR[-END][/tcp|udp]`; a bad spec never reaches a socket.

Parse, don't validate: a `PortSpec` is a `netns.schema.PortMapping` that has passed the
engine's own checks, for exactly one protocol the forwarder serves, with its host address
already parsed. Nothing downstream re-checks or re-parses it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass
from typing import Any

from netns.errors import BurrowError
from netns.schema import IPAddress, PortMapping

PROTOCOLS = ("tcp", "udp")
# `-p 8080:80/tcp,no-client-addr`: the sandbox sees itself as the peer, not the client (the
# behaviour before client addresses were kept). Stored as `keep_client_address`.
NO_CLIENT_ADDR = "no-client-addr"
KEEP_KEY = "keep_client_address"
# `-p 8080:80/tcp,client-port`: the sandbox sees the client's port too, not only its address.
# TCP only (UDP always keeps it: each flow has a socket of its own anyway); it costs a new
# dial socket per connection (rootless.ports.recycle). Stored as `keep_client_port: true`.
CLIENT_PORT = "client-port"
PORT_KEY = "keep_client_port"
OPTIONS = (NO_CLIENT_ADDR, CLIENT_PORT)  # the words after the protocol(s)


def _port_range(text: str, what: str, spec: str) -> tuple[int, int]:
    lo_s, sep, hi_s = text.partition("-")
    try:
        lo = int(lo_s)
        hi = int(hi_s) if sep else lo
    except ValueError:
        raise BurrowError(f"invalid port spec {spec!r}: {what} {text!r} is not a port or "
                          "range (e.g. 8080 or 8080-8090)") from None
    for p in (lo, hi):
        if not 1 <= p <= 65535:
            raise BurrowError(f"invalid port spec {spec!r}: {what} {p} is outside 1-65535")
    if hi < lo:
        raise BurrowError(f"invalid port spec {spec!r}: {what} range {text} is reversed")
    return lo, hi


def _split_host(body: str, spec: str) -> tuple[str, str]:
    """`[v6]:rest`, `ip:h:c` or `h:c` -> (host ip text, "h:c")."""
    if body.startswith("["):
        ip_s, close, rest = body[1:].partition("]")
        if not close or not rest.startswith(":"):
            raise BurrowError(f"invalid port spec {spec!r}: expected [IPv6]:HOST:CTR")
        return ip_s, rest[1:]
    parts = body.split(":")
    if len(parts) == 3:
        return parts[0], ":".join(parts[1:])
    if len(parts) != 2:
        raise BurrowError(f"invalid port spec {spec!r}: expected [IP:]HOST:CTR[/tcp|udp]")
    return "", body


@dataclass(frozen=True)
class PortSpec:
    """One protocol's published range: a PortMapping the engine's checks have passed.

    `keep_client`: the sandbox sees the client's real address (rootless.ports.clientaddr);
    `client_port`: TCP, its port too."""

    mapping: PortMapping
    keep_client: bool = True
    client_port: bool = False

    @classmethod
    def of(cls, host_ip: str | IPAddress | None, host_port: int, container_port: int,
           range: int = 1, protocol: str = "tcp") -> PortSpec:
        """Build and check one; the host address is spelled once (`::0001` is `::1`)."""
        try:
            host = ipaddress.ip_address(host_ip) if host_ip else None
        except ValueError:
            raise BurrowError(f"invalid host address {host_ip!r} in a port mapping: not an "
                              "IPv4 or IPv6 address") from None
        m = PortMapping(host_ip=str(host) if host else "", container_port=container_port,
                        host_port=host_port, range=range, protocol=protocol)
        m.validate()
        return cls.checked(m)

    @classmethod
    def checked(cls, m: PortMapping) -> PortSpec:
        """A PortMapping that has passed `validate()`, for one protocol the forwarder serves."""
        if m.protocol not in PROTOCOLS:
            raise BurrowError(f"invalid protocol {m.protocol!r} in a port mapping: use tcp or "
                              "udp")
        return cls(m)

    @property
    def host(self) -> IPAddress | None:
        """The parsed host address; None = all addresses (v4 and v6)."""
        return self.mapping.host_address

    @classmethod
    def parse(cls, spec: str) -> list[PortSpec]:
        """One spec may name `/tcp,udp`: one PortSpec per protocol."""
        body, _, proto_s = spec.strip().partition("/")
        words = [p.strip().lower() for p in (proto_s or "tcp").split(",")]
        keep, port = NO_CLIENT_ADDR not in words, CLIENT_PORT in words
        protos = [p for p in words if p not in OPTIONS] or ["tcp"]
        for p in protos:
            if p not in PROTOCOLS:
                raise BurrowError(f"invalid port spec {spec!r}: protocol {p!r} is not tcp, udp, "
                                  f"{NO_CLIENT_ADDR} or {CLIENT_PORT}")
        if port and (not keep or "udp" in protos):
            raise BurrowError(f"invalid port spec {spec!r}: {CLIENT_PORT} is for tcp ports that "
                              f"keep the client's address (not with udp or {NO_CLIENT_ADDR})")
        host_ip, body = _split_host(body, spec)
        if host_ip:
            try:
                ipaddress.ip_address(host_ip)
            except ValueError:
                raise BurrowError(f"invalid port spec {spec!r}: {host_ip!r} is not an IP "
                                  "address") from None
        host_s, sep, ctr_s = body.partition(":")
        if not sep or not host_s or not ctr_s:
            raise BurrowError(f"invalid port spec {spec!r}: expected [IP:]HOST:CTR[/tcp|udp]")
        hlo, hhi = _port_range(host_s, "host port", spec)
        clo, chi = _port_range(ctr_s, "container port", spec)
        if chi - clo != hhi - hlo:  # Podman refuses `9000-9002:80` too (no implied 80-82)
            raise BurrowError(f"invalid port spec {spec!r}: host and container port ranges "
                              f"have different lengths: {hhi - hlo + 1} vs {chi - clo + 1}")
        if clo + (hhi - hlo) > 65535:
            raise BurrowError(f"invalid port spec {spec!r}: container ports {clo}-"
                              f"{clo + hhi - hlo} go past 65535")
        return [dataclasses.replace(cls.of(host_ip, hlo, clo, hhi - hlo + 1, p),
                                    keep_client=keep, client_port=port) for p in protos]

    @classmethod
    def from_json(cls, d: Any) -> PortSpec:
        m = PortMapping.from_json(d)  # parsed and validated there
        keep, port = d.get(KEEP_KEY, True), d.get(PORT_KEY, False)
        for key, v in ((KEEP_KEY, keep), (PORT_KEY, port)):
            if not isinstance(v, bool):
                raise BurrowError(f"invalid {key} {v!r:.20} in a port mapping: expected true "
                                  "or false")
        if port and (not keep or m.protocol != "tcp"):
            raise BurrowError(f"invalid {PORT_KEY} in a port mapping: only for tcp with "
                              f"{KEEP_KEY}")
        if m.host_address is not None and str(m.host_address) != m.host_ip:
            spec = cls.of(m.host_address, m.host_port, m.container_port, m.range, m.protocol)
        else:
            spec = cls.checked(m)
        return spec if keep and not port else dataclasses.replace(spec, keep_client=keep,
                                                                  client_port=port)

    def to_json(self) -> dict[str, Any]:
        """Netavark's PortMapping shape (plus `keep_client_address: false` when off,
        `keep_client_port: true` when on)."""
        out = self.mapping.to_json()
        if not self.keep_client:
            out[KEEP_KEY] = False
        if self.client_port:
            out[PORT_KEY] = True
        return out

    @property
    def host_ip(self) -> str:
        return self.mapping.host_ip

    @property
    def host_port(self) -> int:
        return self.mapping.host_port

    @property
    def container_port(self) -> int:
        return self.mapping.container_port

    @property
    def range(self) -> int:
        return self.mapping.range

    @property
    def protocol(self) -> str:
        return self.mapping.protocol

    def pairs(self) -> list[tuple[int, int]]:
        return [(self.host_port + i, self.container_port + i) for i in range(self.range)]

    def __str__(self) -> str:
        ip = f"[{self.host_ip}]:" if self.host and self.host.version == 6 else (
            f"{self.host_ip}:" if self.host else "")
        hp = f"{self.host_port}" + (f"-{self.host_port + self.range - 1}" if self.range > 1
                                    else "")
        cp = f"{self.container_port}" + (f"-{self.container_port + self.range - 1}"
                                         if self.range > 1 else "")
        off = (f",{CLIENT_PORT}" if self.client_port else "") + (
            "" if self.keep_client else f",{NO_CLIENT_ADDR}")
        return f"{ip}{hp}:{cp}/{self.protocol}{off}"


def overlaps(a: PortSpec, b: PortSpec) -> bool:
    if a.protocol != b.protocol:
        return False
    if a.host and b.host and a.host != b.host:
        return False
    return a.host_port <= b.host_port + b.range - 1 and b.host_port <= a.host_port + a.range - 1
