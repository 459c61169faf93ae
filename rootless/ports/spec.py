"""Parse `-p [IP:]HOST[-END]:CTR[-END][/tcp|udp]`; a bad spec never reaches a socket."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from netns.errors import BurrowError

PROTOCOLS = ("tcp", "udp")


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


@dataclass(frozen=True)
class PortSpec:
    host_ip: str          # "" = all addresses (v4 and v6)
    host_port: int
    container_port: int
    range: int
    protocol: str

    @classmethod
    def parse(cls, spec: str) -> list[PortSpec]:
        """One spec may name `/tcp,udp`: one PortSpec per protocol."""
        text = spec.strip()
        body, _, proto_s = text.partition("/")
        protos = [p.strip().lower() for p in (proto_s or "tcp").split(",")]
        for p in protos:
            if p not in PROTOCOLS:
                raise BurrowError(f"invalid port spec {spec!r}: protocol {p!r} is not tcp or udp")
        host_ip = ""
        if body.startswith("["):
            ip_s, close, rest = body[1:].partition("]")
            if not close or not rest.startswith(":"):
                raise BurrowError(f"invalid port spec {spec!r}: expected [IPv6]:HOST:CTR")
            host_ip, body = ip_s, rest[1:]
        else:
            parts = body.split(":")
            if len(parts) == 3:
                host_ip, body = parts[0], ":".join(parts[1:])
            elif len(parts) != 2:
                raise BurrowError(f"invalid port spec {spec!r}: expected [IP:]HOST:CTR[/tcp|udp]")
        if host_ip:
            try:
                host_ip = str(ipaddress.ip_address(host_ip))
            except ValueError:
                raise BurrowError(f"invalid port spec {spec!r}: {host_ip!r} is not an IP "
                                  "address") from None
        host_s, sep, ctr_s = body.partition(":")
        if not sep or not host_s or not ctr_s:
            raise BurrowError(f"invalid port spec {spec!r}: expected [IP:]HOST:CTR[/tcp|udp]")
        hlo, hhi = _port_range(host_s, "host port", spec)
        clo, chi = _port_range(ctr_s, "container port", spec)
        if "-" in ctr_s and chi - clo != hhi - hlo:
            raise BurrowError(f"invalid port spec {spec!r}: host range {host_s} and container "
                              f"range {ctr_s} differ in length")
        return [cls(host_ip, hlo, clo, hhi - hlo + 1, p) for p in protos]

    def to_json(self) -> dict[str, Any]:
        """Netavark's PortMapping shape."""
        return {"host_ip": self.host_ip, "host_port": self.host_port,
                "container_port": self.container_port, "range": self.range,
                "protocol": self.protocol}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PortSpec:
        return cls(str(d.get("host_ip", "")), int(d["host_port"]), int(d["container_port"]),
                   int(d.get("range", 1)), str(d.get("protocol", "tcp")))

    def pairs(self) -> list[tuple[int, int]]:
        return [(self.host_port + i, self.container_port + i) for i in range(self.range)]

    def __str__(self) -> str:
        ip = f"[{self.host_ip}]:" if ":" in self.host_ip else (f"{self.host_ip}:" if self.host_ip
                                                             else "")
        hp = f"{self.host_port}" + (f"-{self.host_port + self.range - 1}" if self.range > 1
                                    else "")
        cp = f"{self.container_port}" + (f"-{self.container_port + self.range - 1}"
                                         if self.range > 1 else "")
        return f"{ip}{hp}:{cp}/{self.protocol}"


def overlaps(a: PortSpec, b: PortSpec) -> bool:
    if a.protocol != b.protocol:
        return False
    if a.host_ip and b.host_ip and a.host_ip != b.host_ip:
        return False
    return a.host_port <= b.host_port + b.range - 1 and b.host_port <= a.host_port + a.range - 1
