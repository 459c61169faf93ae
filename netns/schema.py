"""The Netavark JSON contract as frozen dataclasses.

Accepts both the 1.4 shape (`networks` as a map) and the 2.x shape (`networks` as an ordered
array of `{"name": ..., ...}`), plus the optional 2.x fields. Unknown fields are kept in `extra`
so that `to_json(from_json(x))` gives back what came in.

Parsing here is structural: types, required fields, IP/CIDR syntax. Semantic checks that need
the whole request (a static IP inside its subnet, free interface names, ...) live in
`validate.py`, which runs before any side effect.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from netns.errors import BurrowError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

Json = dict[str, Any]
T = TypeVar("T")


def _decode_error(message: str) -> BurrowError:
    return BurrowError(f"failed to load network options: JSON Decoding error: {message}")


def load_json(text: str | bytes, error: Callable[[str], BurrowError]) -> Any:
    """json.loads with every failure (bad syntax, bad UTF-8, absurd nesting) as `error(...)`."""
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise error(str(exc)) from None
    except RecursionError:
        raise error("the JSON is nested too deeply") from None


def _req(obj: Mapping[str, Any], key: str, kind: type[T], where: str) -> T:
    if key not in obj:
        raise _decode_error(f"missing field `{key}` in {where}")
    return _typed(obj[key], key, kind, where)


def _opt(obj: Mapping[str, Any], key: str, kind: type[T], where: str) -> T | None:
    value = obj.get(key)
    return None if value is None else _typed(value, key, kind, where)


def _typed(value: Any, key: str, kind: type[T], where: str) -> T:
    # bool is an int subclass in Python, but JSON keeps them apart and so must we.
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise _decode_error(f"invalid type for `{key}` in {where}: expected integer, got {value!r}")
    if not isinstance(value, kind):
        raise _decode_error(
            f"invalid type for `{key}` in {where}: expected {kind.__name__}, got {value!r}"
        )
    return value


def _str_list(obj: Mapping[str, Any], key: str, where: str) -> tuple[str, ...] | None:
    raw = _opt(obj, key, list, where)
    if raw is None:
        return None
    for item in raw:
        _typed(item, key, str, where)
    return tuple(raw)


def _str_map(obj: Mapping[str, Any], key: str, where: str) -> dict[str, str] | None:
    raw = _opt(obj, key, dict, where)
    if raw is None:
        return None
    out: dict[str, str] = {}
    for k, v in raw.items():
        # Podman always writes option values as strings; be liberal with numbers and bools.
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, int | float):
            v = str(v)
        out[k] = _typed(v, f"{key}.{k}", str, where)
    return out


def _no_zone(text: str, what: str) -> None:
    # Python's ipaddress takes "fd00::5%<anything but %>" as an address with a scope id, whose
    # text then reached status JSON, rules (nft/iptables failed mid-apply) and netlink. The
    # Netavark JSON never carries one (Rust's IpAddr has none), so refuse it here.
    if "%" in text:
        raise BurrowError(f"invalid {what} {text!r}: an address with a %zone is not allowed here; "
                          "drop the %... part")


def parse_ip(text: str, what: str) -> IPAddress:
    _no_zone(text, what)
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise BurrowError(f"invalid {what} {text!r}: not an IPv4 or IPv6 address") from None


def parse_net(text: str, what: str) -> IPNetwork:
    _no_zone(text, what)
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise BurrowError(f"invalid {what} {text!r}: not a CIDR such as 10.88.0.0/16") from None


_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def usable_subnet(net: IPNetwork, what: str) -> IPNetwork:
    """A subnet a bridge and its containers can live in, or a BurrowError naming the fix.

    Each refusal here was applied (or half-applied) before: ::/0 or 0.0.0.0/1 on a bridge is a
    kernel route that takes the host's own traffic; a loopback range makes containers look like
    local clients (127.x) to the host's services; a multicast range failed mid-setup and left the
    bridge behind; an IPv4-mapped range set up fine, then its teardown failed on every call
    (nft lists its addresses in the IPv4 form) and its rules stayed.
    """
    why = ""
    if net.network_address.is_unspecified:
        why = (f"it holds the unspecified address {net.network_address} (and as /0 or /1 its "
               "route would take the host's own traffic)")
    elif net.is_loopback or net.overlaps(_LOOPBACK[net.version]):
        why = "it is a loopback range: containers would look like local clients to the host"
    elif net.is_multicast:
        why = "it is a multicast range"
    elif net.version == 6 and net.subnet_of(_MAPPED):
        why = "it is an IPv4-mapped IPv6 range, which no interface can route"
    if why:
        raise BurrowError(f"invalid {what} {net}: {why}; use a private range such as "
                          "10.89.0.0/24 or fd00:89::/64")
    return net


_LOOPBACK: dict[int, IPNetwork] = {4: ipaddress.IPv4Network("127.0.0.0/8"),
                                   6: ipaddress.IPv6Network("::1/128")}


def parse_net_strict(text: str) -> IPNetwork | None:
    """The network `text` names, or None when it has host bits set (10.0.0.1/24)."""
    try:
        return ipaddress.ip_network(text, strict=True) if "%" not in text else None
    except ValueError:
        return None


def _extra(obj: Mapping[str, Any], known: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in known}


def _put(out: Json, key: str, value: Any) -> None:
    if value is not None:
        out[key] = value


@dataclass(frozen=True)
class LeaseRange:
    start_ip: str | None = None
    end_ip: str | None = None


@dataclass(frozen=True)
class Subnet:
    subnet: IPNetwork
    gateway: IPAddress | None = None
    lease_range: Json | None = None

    @classmethod
    def from_json(cls, obj: Any, where: str) -> Subnet:
        obj = _typed(obj, "subnets[]", dict, where)
        net = usable_subnet(parse_net(_req(obj, "subnet", str, where), f"subnet in {where}"),
                            f"subnet in {where}")
        gw_text = _opt(obj, "gateway", str, where)
        gw = parse_ip(gw_text, f"gateway in {where}") if gw_text else None
        return cls(subnet=net, gateway=gw, lease_range=_opt(obj, "lease_range", dict, where))

    def to_json(self) -> Json:
        out: Json = {"subnet": str(self.subnet)}
        _put(out, "gateway", str(self.gateway) if self.gateway else None)
        _put(out, "lease_range", self.lease_range)
        return out


@dataclass(frozen=True)
class Route:
    destination: IPNetwork
    gateway: IPAddress | None = None
    metric: int | None = None
    route_type: str | None = None

    @classmethod
    def from_json(cls, obj: Any, where: str) -> Route:
        obj = _typed(obj, "routes[]", dict, where)
        dest_text = _req(obj, "destination", str, where)
        dest = parse_net(dest_text, f"route destination in {where}")
        if str(dest) != dest_text and dest != parse_net_strict(dest_text):
            raise BurrowError(f"route destination invalid: {dest_text} is an address, not a network")
        gw_text = _opt(obj, "gateway", str, where)
        return cls(
            destination=dest,
            gateway=parse_ip(gw_text, f"route gateway in {where}") if gw_text else None,
            metric=_opt(obj, "metric", int, where),
            route_type=_opt(obj, "route_type", str, where),
        )

    def to_json(self) -> Json:
        out: Json = {"destination": str(self.destination)}
        _put(out, "gateway", str(self.gateway) if self.gateway else None)
        _put(out, "metric", self.metric)
        _put(out, "route_type", self.route_type)
        return out


_NETWORK_KEYS = frozenset(
    {
        "name", "id", "driver", "network_interface", "subnets", "ipv6_enabled", "internal",
        "dns_enabled", "options", "ipam_options", "network_dns_servers", "routes",
    }
)  # fmt: skip


@dataclass(frozen=True)
class Network:
    name: str
    id: str
    driver: str
    network_interface: str | None = None
    subnets: tuple[Subnet, ...] = ()
    ipv6_enabled: bool = False
    internal: bool = False
    dns_enabled: bool = False
    options: dict[str, str] | None = None
    ipam_options: dict[str, str] | None = None
    network_dns_servers: tuple[str, ...] | None = None
    routes: tuple[Route, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_json(cls, obj: Any, where: str = "network") -> Network:
        obj = _typed(obj, where, dict, where)
        name = _req(obj, "name", str, where)
        where = f"network {name}"
        subnets_raw = _opt(obj, "subnets", list, where) or []
        routes_raw = _opt(obj, "routes", list, where)
        return cls(
            name=name,
            id=_req(obj, "id", str, where),
            driver=_req(obj, "driver", str, where),
            network_interface=_opt(obj, "network_interface", str, where),
            subnets=tuple(Subnet.from_json(s, where) for s in subnets_raw),
            ipv6_enabled=_req(obj, "ipv6_enabled", bool, where),
            internal=_req(obj, "internal", bool, where),
            dns_enabled=_req(obj, "dns_enabled", bool, where),
            options=_str_map(obj, "options", where),
            ipam_options=_str_map(obj, "ipam_options", where),
            network_dns_servers=_str_list(obj, "network_dns_servers", where),
            routes=None
            if routes_raw is None
            else tuple(Route.from_json(r, where) for r in routes_raw),
            extra=_extra(obj, _NETWORK_KEYS),
        )

    def to_json(self) -> Json:
        out: Json = {"name": self.name, "id": self.id, "driver": self.driver}
        _put(out, "network_interface", self.network_interface)
        out["subnets"] = [s.to_json() for s in self.subnets]
        out["ipv6_enabled"] = self.ipv6_enabled
        out["internal"] = self.internal
        out["dns_enabled"] = self.dns_enabled
        _put(out, "options", self.options)
        _put(out, "ipam_options", self.ipam_options)
        _put(
            out,
            "network_dns_servers",
            list(self.network_dns_servers) if self.network_dns_servers is not None else None,
        )
        _put(out, "routes", [r.to_json() for r in self.routes] if self.routes is not None else None)
        out.update(self.extra)
        return out

    def option(self, key: str, default: str | None = None) -> str | None:
        return (self.options or {}).get(key, default)

    @property
    def ipam_driver(self) -> str:
        return (self.ipam_options or {}).get("driver") or "host-local"


_PER_NETWORK_KEYS = frozenset(
    {"interface_name", "static_ips", "aliases", "static_mac", "options", "name"}
)


@dataclass(frozen=True)
class PerNetworkOptions:
    interface_name: str
    static_ips: tuple[IPAddress, ...] | None = None
    aliases: tuple[str, ...] | None = None
    static_mac: str | None = None
    options: dict[str, str] | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_json(cls, obj: Any, where: str) -> PerNetworkOptions:
        obj = _typed(obj, where, dict, where)
        ips = _str_list(obj, "static_ips", where)
        return cls(
            interface_name=_req(obj, "interface_name", str, where),
            static_ips=None
            if ips is None
            else tuple(parse_ip(i, f"static ip in {where}") for i in ips),
            aliases=_str_list(obj, "aliases", where),
            static_mac=_opt(obj, "static_mac", str, where),
            options=_str_map(obj, "options", where),
            extra=_extra(obj, _PER_NETWORK_KEYS),
        )

    def to_json(self) -> Json:
        out: Json = {}
        _put(
            out,
            "static_ips",
            [str(i) for i in self.static_ips] if self.static_ips is not None else None,
        )
        _put(out, "aliases", list(self.aliases) if self.aliases is not None else None)
        _put(out, "static_mac", self.static_mac)
        out["interface_name"] = self.interface_name
        _put(out, "options", self.options)
        out.update(self.extra)
        return out


_PROTOCOLS = ("tcp", "udp", "sctp")


@dataclass(frozen=True)
class PortMapping:
    host_ip: str
    container_port: int
    host_port: int
    range: int
    protocol: str

    @classmethod
    def from_json(cls, obj: Any, where: str = "port mapping") -> PortMapping:
        """Parse and check: a mapping read from the wire is always one rules can be made of."""
        obj = _typed(obj, where, dict, where)
        pm = cls(
            host_ip=_req(obj, "host_ip", str, where),
            container_port=_req(obj, "container_port", int, where),
            host_port=_req(obj, "host_port", int, where),
            range=_req(obj, "range", int, where),
            protocol=_req(obj, "protocol", str, where),
        )
        pm.validate()
        return pm

    def to_json(self) -> Json:
        return {
            "host_ip": self.host_ip,
            "container_port": self.container_port,
            "host_port": self.host_port,
            "range": self.range,
            "protocol": self.protocol,
        }

    @property
    def protocols(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.protocol.split(",") if p.strip())

    def validate(self) -> None:
        """Raise a BurrowError naming the mapping if it could not be turned into rules."""
        label = f"port mapping {self.host_ip or '*'}:{self.host_port}->{self.container_port}/{self.protocol}"
        if not self.protocols:
            raise BurrowError(f"{label}: no protocol given")
        for proto in self.protocols:
            if proto not in _PROTOCOLS:
                raise BurrowError(f"{label}: unknown protocol {proto!r} (use tcp, udp or sctp)")
        if self.range < 1:
            raise BurrowError(f"{label}: range must be at least 1, got {self.range}")
        for what, port in (("host", self.host_port), ("container", self.container_port)):
            if not 1 <= port <= 65535:
                raise BurrowError(f"{label}: {what} port must be 1-65535, got {port}")
            if port + self.range - 1 > 65535:
                raise BurrowError(
                    f"{label}: {what} port range {port}-{port + self.range - 1} goes past 65535"
                )
        if self.host_ip:
            parse_ip(self.host_ip, f"host_ip in {label}")

    @functools.cached_property
    def host_address(self) -> IPAddress | None:
        """The parsed host_ip, parsed once (None: every address)."""
        return ipaddress.ip_address(self.host_ip) if self.host_ip else None


_OPTIONS_KEYS = frozenset(
    {"container_id", "container_name", "container_hostname", "networks", "network_info",
     "port_mappings", "dns_servers"}
)  # fmt: skip


@dataclass(frozen=True)
class NetworkOptions:
    """The request Podman writes to netavark's stdin for setup and teardown."""

    container_id: str
    container_name: str
    # Ordered (name, options): a 1.4 map keeps its JSON order, a 2.x array fixes the order.
    networks: tuple[tuple[str, PerNetworkOptions], ...]
    network_info: dict[str, Network]
    port_mappings: tuple[PortMapping, ...] | None = None
    dns_servers: tuple[str, ...] | None = None
    container_hostname: str | None = None
    networks_as_array: bool = False
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_json(cls, obj: Any) -> NetworkOptions:
        where = "network options"
        obj = _typed(obj, where, dict, where)
        raw_networks = obj.get("networks")
        if raw_networks is None:
            raise _decode_error(f"missing field `networks` in {where}")
        networks: list[tuple[str, PerNetworkOptions]] = []
        as_array = isinstance(raw_networks, list)
        if as_array:
            for item in raw_networks:
                item = _typed(item, "networks[]", dict, where)
                name = _req(item, "name", str, "networks[]")
                networks.append(
                    (name, PerNetworkOptions.from_json(item, f"options for network {name}"))
                )
        elif isinstance(raw_networks, dict):
            for name, item in raw_networks.items():
                networks.append(
                    (name, PerNetworkOptions.from_json(item, f"options for network {name}"))
                )
        else:
            raise _decode_error("invalid type for `networks`: expected a map or an array")
        info_raw = _req(obj, "network_info", dict, where)
        info = {name: Network.from_json(n, f"network_info.{name}") for name, n in info_raw.items()}
        ports_raw = _opt(obj, "port_mappings", list, where)
        return cls(
            container_id=_req(obj, "container_id", str, where),
            container_name=_req(obj, "container_name", str, where),
            networks=tuple(networks),
            network_info=info,
            port_mappings=None
            if ports_raw is None
            else tuple(PortMapping.from_json(p) for p in ports_raw),
            dns_servers=_str_list(obj, "dns_servers", where),
            container_hostname=_opt(obj, "container_hostname", str, where),
            networks_as_array=as_array,
            extra=_extra(obj, _OPTIONS_KEYS),
        )

    @classmethod
    def loads(cls, text: str | bytes) -> NetworkOptions:
        return cls.from_json(load_json(text, _decode_error))

    def to_json(self) -> Json:
        out: Json = {"container_id": self.container_id, "container_name": self.container_name}
        _put(out, "container_hostname", self.container_hostname)
        if self.port_mappings is not None:
            out["port_mappings"] = [p.to_json() for p in self.port_mappings]
        if self.networks_as_array:
            out["networks"] = [{"name": n, **o.to_json()} for n, o in self.networks]
        else:
            out["networks"] = {n: o.to_json() for n, o in self.networks}
        out["network_info"] = {n: i.to_json() for n, i in self.network_info.items()}
        _put(out, "dns_servers", list(self.dns_servers) if self.dns_servers is not None else None)
        out.update(self.extra)
        return out

    @property
    def ports(self) -> tuple[PortMapping, ...]:
        return self.port_mappings or ()


@dataclass(frozen=True)
class NetAddress:
    gateway: IPAddress | None
    ipnet: IPInterface

    def to_json(self) -> Json:
        return {"gateway": str(self.gateway) if self.gateway else None, "ipnet": str(self.ipnet)}

    @classmethod
    def from_json(cls, obj: Json) -> NetAddress:
        gw = obj.get("gateway")
        return cls(
            gateway=ipaddress.ip_address(gw) if gw else None,
            ipnet=ipaddress.ip_interface(obj["ipnet"]),
        )


@dataclass(frozen=True)
class NetInterface:
    mac_address: str
    subnets: tuple[NetAddress, ...]

    def to_json(self) -> Json:
        return {"mac_address": self.mac_address, "subnets": [s.to_json() for s in self.subnets]}

    @classmethod
    def from_json(cls, obj: Json) -> NetInterface:
        return cls(
            mac_address=obj["mac_address"],
            subnets=tuple(NetAddress.from_json(s) for s in obj.get("subnets") or ()),
        )


@dataclass(frozen=True)
class StatusBlock:
    dns_search_domains: tuple[str, ...]
    dns_server_ips: tuple[str, ...]
    interfaces: dict[str, NetInterface]

    def to_json(self) -> Json:
        # Key order matches netavark's struct field order (alphabetical).
        return {
            "dns_search_domains": list(self.dns_search_domains),
            "dns_server_ips": list(self.dns_server_ips),
            "interfaces": {k: v.to_json() for k, v in self.interfaces.items()},
        }

    @classmethod
    def from_json(cls, obj: Json) -> StatusBlock:
        return cls(
            dns_search_domains=tuple(obj.get("dns_search_domains") or ()),
            dns_server_ips=tuple(obj.get("dns_server_ips") or ()),
            interfaces={
                k: NetInterface.from_json(v) for k, v in (obj.get("interfaces") or {}).items()
            },
        )


def dump_status(blocks: Mapping[str, StatusBlock]) -> str:
    return json.dumps({k: v.to_json() for k, v in blocks.items()}, separators=(",", ":"))


# -- `create` -----------------------------------------------------------------------------

DEFAULT_POOL_SIZE = 24


def _create_error(message: str) -> BurrowError:
    return BurrowError(f"failed to load network create options: JSON Decoding error: {message}")


@dataclass(frozen=True)
class SubnetPool:
    base: IPNetwork
    size: int  # prefix length of the subnets handed out

    @classmethod
    def from_json(cls, obj: Any) -> SubnetPool:
        where = "subnet pool"
        obj = _typed(obj, "subnet_pools[]", dict, where)
        base = usable_subnet(parse_net(str(obj.get("base", "")), "subnet pool base"),
                             "subnet pool base")
        size = _opt(obj, "size", int, where)
        return cls(base, DEFAULT_POOL_SIZE if size is None else size)


@dataclass(frozen=True)
class CreateRequest:
    """`netavark create` input: a partial Network, what is in use, and how to fill the gaps."""

    network: Network
    used_interfaces: frozenset[str] = frozenset()
    used_names: frozenset[str] = frozenset()
    used_subnets: tuple[IPNetwork, ...] = ()
    subnet_pools: tuple[SubnetPool, ...] | None = None  # None: the default pool
    default_interface_name: str | None = None
    check_used_subnets: bool = True

    @classmethod
    def from_json(cls, obj: Any) -> CreateRequest:
        if not isinstance(obj, dict) or not isinstance(obj.get("network"), dict):
            raise BurrowError("create: input must be a JSON object with a `network` field")
        used = _opt(obj, "used", dict, "create input") or {}
        options = _opt(obj, "options", dict, "create input") or {}
        raw = dict(obj["network"])
        raw.setdefault("id", secrets.token_hex(32))
        raw.setdefault("driver", "bridge")
        raw.setdefault("ipv6_enabled", False)
        raw.setdefault("internal", False)
        raw.setdefault("dns_enabled", False)
        pools = _opt(options, "subnet_pools", list, "create options")
        check = _opt(options, "check_used_subnets", bool, "create options")
        return cls(
            network=Network.from_json(raw),
            used_interfaces=frozenset(_str_list(used, "interfaces", "used") or ()),
            used_names=frozenset(_str_list(used, "names", "used") or ()),
            used_subnets=tuple(
                parse_net(s, "used subnet") for s in _str_list(used, "subnets", "used") or ()
            ),
            subnet_pools=tuple(SubnetPool.from_json(p) for p in pools) if pools else None,
            default_interface_name=_opt(options, "default_interface_name", str, "create options"),
            check_used_subnets=True if check is None else check,
        )

    @classmethod
    def loads(cls, text: str | bytes) -> CreateRequest:
        return cls.from_json(load_json(text, _create_error))
