"""Validate a whole setup/teardown request before the first side effect.

The output is a `Request`: every network turned into a typed `Attachment` holding only checked
values (names, addresses, options), so planning and apply never see raw input.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from netns import names
from netns.errors import BurrowError
from netns.firewall.types import Isolate
from netns.schema import (
    IPAddress,
    IPInterface,
    Network,
    NetworkOptions,
    PerNetworkOptions,
    PortMapping,
    Route,
)

DRIVERS = ("bridge", "macvlan")
BRIDGE_OPTIONS = frozenset({"mtu", "isolate", "metric", "mode", "no_default_route", "vrf", "vlan"})
MACVLAN_OPTIONS = frozenset({"mtu", "mode", "metric", "no_default_route", "bclim"})
MACVLAN_MODES = ("bridge", "private", "vepa", "passthru", "source")
# Options Podman knows that this kernel (no vrf, no vlan filtering) or burrow can't honour:
# refusing them beats silently building a different network.
UNSUPPORTED = {
    "vrf": "the kernel on this machine has no VRF support",
    "vlan": "the kernel on this machine has no bridge VLAN filtering",
}


@dataclass(frozen=True)
class Attachment:
    """One network of one container, validated."""

    network: Network
    driver: Literal["bridge", "macvlan"]
    ifname: str  # inside the container
    addresses: tuple[IPInterface, ...]  # container addresses with the subnet prefix
    gateways: tuple[IPInterface, ...]  # gateway/prefix per subnet that has a gateway
    mac: str | None
    mtu: int  # 0 = kernel default
    metric: int
    default_route: bool
    routes: tuple[Route, ...]
    aliases: tuple[str, ...]
    # bridge only
    bridge: str = ""
    host_ifname: str | None = None
    isolate: Isolate = "false"
    managed: bool = True
    # macvlan only
    parent: str | None = None
    macvlan_mode: str = "bridge"

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


@dataclass(frozen=True)
class Request:
    options: NetworkOptions
    attachments: tuple[Attachment, ...]
    ports: tuple[PortMapping, ...]

    @property
    def container_id(self) -> str:
        return self.options.container_id


def _int_option(net: Network, key: str, default: int, low: int, high: int) -> int:
    text = net.option(key)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise BurrowError(f"unable to parse {key!r}: {text!r} is not a number") from None
    if not low <= value <= high:
        raise BurrowError(f"option {key}={value} is out of range {low}-{high}")
    return value


def _bool_option(net: Network, key: str) -> bool:
    text = (net.option(key) or "false").lower()
    if text not in ("true", "false", "1", "0"):
        raise BurrowError(f"unable to parse {key!r}: {text!r} is not true or false")
    return text in ("true", "1")


def _isolate(net: Network) -> Isolate:
    text = (net.option("isolate") or "false").lower()
    if text == "true":
        return "true"
    if text == "strict":
        return "strict"
    if text == "false" or text == "":
        return "false"
    raise BurrowError(f'unable to parse "isolate": {text!r} is not `true`, `false` or `strict`')


def _check_options(net: Network, allowed: frozenset[str]) -> None:
    for key, value in (net.options or {}).items():
        if key not in allowed:
            raise BurrowError(
                f"unsupported {net.driver} network option {key!r}; valid options: "
                + ", ".join(sorted(allowed - set(UNSUPPORTED)))
            )
        if key in UNSUPPORTED and value not in ("", "0", "false"):
            raise BurrowError(f"network option {key}={value} is not supported: {UNSUPPORTED[key]}")


def _addresses(net: Network, per: PerNetworkOptions) -> tuple[IPInterface, ...]:
    driver = net.ipam_driver
    if driver == "none":
        return ()
    if driver == "dhcp":
        raise BurrowError("dhcp ipam driver is not supported by burrow")
    if driver != "host-local":
        raise BurrowError(f"unsupported ipam driver {driver!r} (use host-local or none)")
    if not net.subnets:
        return ()
    ips = per.static_ips
    if ips is None:
        raise BurrowError("no static ips provided")
    if len(ips) != len(net.subnets):
        raise BurrowError(
            f"wrong number of static ips: got {len(ips)} for {len(net.subnets)} subnets "
            "(static_ips[i] must be an address in subnets[i])"
        )
    out: list[IPInterface] = []
    for ip, sub in zip(ips, net.subnets, strict=True):
        if ip not in sub.subnet:
            raise BurrowError(f"static ip {ip} is not in subnet {sub.subnet}")
        if sub.gateway is not None and ip == sub.gateway:
            raise BurrowError(f"static ip {ip} is the gateway of subnet {sub.subnet}")
        if (
            isinstance(sub.subnet, ipaddress.IPv4Network)
            and sub.subnet.prefixlen < 31
            and ip in (sub.subnet.network_address, sub.subnet.broadcast_address)
        ):
            raise BurrowError(f"static ip {ip} is the network or broadcast address of {sub.subnet}")
        out.append(ipaddress.ip_interface(f"{ip}/{sub.subnet.prefixlen}"))
    return tuple(out)


def _gateways(net: Network) -> tuple[IPInterface, ...]:
    out: list[IPInterface] = []
    for sub in net.subnets:
        if sub.gateway is None:
            continue
        if sub.gateway not in sub.subnet:
            raise BurrowError(f"gateway {sub.gateway} is not in subnet {sub.subnet}")
        out.append(ipaddress.ip_interface(f"{sub.gateway}/{sub.subnet.prefixlen}"))
    return tuple(out)


def attachment(net: Network, per: PerNetworkOptions) -> Attachment:
    if net.driver not in DRIVERS:
        raise BurrowError(
            f"unknown network driver {net.driver!r} (supported: {', '.join(DRIVERS)})"
        )
    ifname = names.ifname(per.interface_name, "container interface")
    for alias in per.aliases or ():
        names.config_token(alias, "alias")
    mac = names.mac(per.static_mac) if per.static_mac else None
    addresses = _addresses(net, per)
    gateways = _gateways(net)
    routes = tuple(net.routes or ())
    for r in routes:
        if r.route_type not in (None, "unicast", "blackhole", "unreachable", "prohibit"):
            raise BurrowError(f"route to {r.destination}: unknown route_type {r.route_type!r}")
        if r.gateway is not None and r.gateway.version != r.destination.version:
            raise BurrowError(f"route to {r.destination}: gateway {r.gateway} is another IP family")
    common = {
        "network": net,
        "ifname": ifname,
        "addresses": addresses,
        "gateways": gateways,
        "mac": mac,
        "routes": routes,
        "aliases": tuple(per.aliases or ()),
    }
    if net.driver == "bridge":
        _check_options(net, BRIDGE_OPTIONS)
        mode = net.option("mode") or "managed"
        if mode not in ("managed", "unmanaged"):
            raise BurrowError(f"bridge mode {mode!r} is not valid (use managed or unmanaged)")
        if not net.network_interface:
            raise BurrowError("no bridge interface name given")
        host_ifname = (per.options or {}).get("host_interface_name") or None
        return Attachment(
            driver="bridge",
            mtu=_int_option(net, "mtu", 0, 0, 65535),
            metric=_int_option(net, "metric", 100, 0, 2**32 - 1),
            default_route=not net.internal and not _bool_option(net, "no_default_route"),
            bridge=names.ifname(net.network_interface, "bridge interface"),
            host_ifname=names.ifname(host_ifname, "host interface") if host_ifname else None,
            isolate=_isolate(net),
            managed=mode == "managed",
            **common,  # type: ignore[arg-type]
        )
    _check_options(net, MACVLAN_OPTIONS)
    mode = net.option("mode") or "bridge"
    if mode not in MACVLAN_MODES:
        raise BurrowError(f"macvlan mode {mode!r} is not valid (use {', '.join(MACVLAN_MODES)})")
    parent = net.network_interface or None
    return Attachment(
        driver="macvlan",
        mtu=_int_option(net, "mtu", 0, 0, 65535),
        metric=_int_option(net, "metric", 100, 0, 2**32 - 1),
        default_route=not net.internal and not _bool_option(net, "no_default_route"),
        parent=names.ifname(parent, "macvlan parent interface") if parent else None,
        macvlan_mode=mode,
        **common,  # type: ignore[arg-type]
    )


def request(opts: NetworkOptions) -> Request:
    """Check everything that can be checked without the kernel; raise on the first problem."""
    if not opts.container_id or any(c in opts.container_id for c in " ,\n"):
        raise BurrowError(f"invalid container id {opts.container_id!r}")
    attachments: list[Attachment] = []
    seen_if: set[str] = set()
    for name, per in opts.networks:
        net = opts.network_info.get(name)
        if net is None:
            raise BurrowError(f"network info for network {name} not found")
        try:
            att = attachment(net, per)
        except BurrowError as exc:
            raise exc.wrap(f"network {name}") from None
        if att.ifname in seen_if:
            raise BurrowError(
                f"network {name}: interface name {att.ifname} is used twice in the request"
            )
        seen_if.add(att.ifname)
        attachments.append(att)
    for pm in opts.ports:
        # A host_ip of a family the container lacks on these networks is not an error: rootless
        # Podman's `network connect` sends all the container's mappings with only the new
        # network. Such a mapping simply gets no rule here, as with netavark.
        pm.validate()
    return Request(options=opts, attachments=tuple(attachments), ports=opts.ports)
