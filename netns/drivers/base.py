"""What every driver's attachment has in common, and the option parsers drivers share (pure)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TypeVar

from netns.errors import BurrowError
from netns.schema import IPAddress, IPInterface, Network, Route

IPV4_MIN_MTU = 68  # RFC 791
IPV6_MIN_MTU = 1280  # RFC 8200
MAX_MTU = 65535


@dataclass(frozen=True)
class Attachment:
    """One network of one container, validated; each driver subclasses it with its own fields.

    `addresses` is empty until the network's IPAM has run (`netns.ipam.assign`).
    """

    network: Network
    ifname: str  # inside the container
    addresses: tuple[IPInterface, ...]  # container addresses with the subnet prefix
    gateways: tuple[IPInterface, ...]  # gateway/prefix per subnet that has a gateway
    mac: str | None
    mtu: int  # 0 = kernel default
    metric: int
    default_route: bool
    routes: tuple[Route, ...]
    aliases: tuple[str, ...]
    network_dns: tuple[IPAddress, ...]  # the network's upstream DNS servers

    @property
    def name(self) -> str:
        return self.network.name

    @property
    def internal(self) -> bool:
        return self.network.internal

    @property
    def ipv6(self) -> bool:
        return any(a.version == 6 for a in self.addresses) or any(
            s.subnet.version == 6 for s in self.network.subnets
        )

    def first_address(self, version: int) -> IPAddress | None:
        for a in self.addresses:
            if a.version == version:
                return a.ip
        return None


def int_option(net: Network, key: str, default: int, low: int, high: int) -> int:
    text = net.option(key)
    if text is None or text == "":
        return default
    # As Rust's str::parse::<u32> (netavark): ASCII digits with an optional sign; Python's int()
    # would also take " 1500 ", "1_500" and other scripts' digits.
    digits = text[1:] if text[:1] in "+-" else text
    if not (digits.isascii() and digits.isdigit()):
        raise BurrowError(f"unable to parse {key!r}: {text!r} is not a number")
    value = int(text)
    if not low <= value <= high:
        raise BurrowError(f"option {key}={value} is out of range {low}-{high}")
    return value


def bool_option(net: Network, key: str) -> bool:
    text = (net.option(key) or "false").lower()
    if text not in ("true", "false", "1", "0"):
        raise BurrowError(f"unable to parse {key!r}: {text!r} is not true or false")
    return text in ("true", "1")


def mtu_option(net: Network) -> int:
    """0 (the kernel's default) or an MTU every subnet's IP family can live with."""
    mtu = int_option(net, "mtu", 0, 0, MAX_MTU)
    if mtu == 0:
        return 0
    v6 = net.ipv6_enabled or any(s.subnet.version == 6 for s in net.subnets)
    low, family = (IPV6_MIN_MTU, "IPv6") if v6 else (IPV4_MIN_MTU, "IPv4")
    if mtu < low:
        raise BurrowError(f"option mtu={mtu} is below the {family} minimum of {low}")
    return mtu


def check_options(net: Network, allowed: frozenset[str], unsupported: dict[str, str]) -> None:
    for key, value in (net.options or {}).items():
        if key not in allowed:
            raise BurrowError(
                f"unsupported {net.driver} network option {key!r}; valid options: "
                + ", ".join(sorted(allowed - set(unsupported)))
            )
        if key in unsupported and value not in ("", "0", "false"):
            raise BurrowError(f"network option {key}={value} is not supported: {unsupported[key]}")


def gateways(net: Network) -> tuple[IPInterface, ...]:
    out: list[IPInterface] = []
    for sub in net.subnets:
        if sub.gateway is None:
            continue
        if sub.gateway not in sub.subnet:
            raise BurrowError(f"gateway {sub.gateway} is not in subnet {sub.subnet}")
        out.append(ipaddress.ip_interface(f"{sub.gateway}/{sub.subnet.prefixlen}"))
    return tuple(out)


_A = TypeVar("_A", bound=Attachment)


def own(att: Attachment, kind: type[_A], driver: str) -> _A:
    """`att` as the driver's own attachment type; another driver's attachment is a bug."""
    if not isinstance(att, kind):
        raise TypeError(f"the {driver} driver got a {type(att).__name__}")
    return att
