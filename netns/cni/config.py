"""Parse a CNI invocation (environment, CNI_ARGS, stdin config) into frozen records (pure).

Everything a later step uses is checked here, before any side effect: names, addresses, ports,
the IPAM ranges. Unknown top-level keys are ignored, as the spec asks of plugins; keys burrow
cannot honour (`isGateway: false`, an IPAM other than host-local) are refused with code 2.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from netns import names
from netns.cni import errors as E
from netns.cni.errors import CniError
from netns.errors import BurrowError
from netns.schema import IPAddress, IPNetwork, PortMapping, parse_ip, parse_net, usable_subnet

_T = TypeVar("_T")

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST = "1.1.0"
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS")
# The spec's container id: alphanumeric first, then alphanumerics, `_`, `.` or `-`.
CONTAINER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
DEFAULT_BRIDGE = "cni0"
DEFAULT_STATE_DIR = "/run/burrow-cni"
DEFAULT_DATA_DIR = "/var/lib/burrow-cni/networks"
KNOWN_ARGS = frozenset({
    "IgnoreUnknown", "IP", "MAC", "ALIASES",
    "K8S_POD_NAME", "K8S_POD_NAMESPACE", "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID",
})  # fmt: skip
MAX_INPUT = 1 << 20  # a config is a few hundred bytes; refuse absurd input early


# -- environment -------------------------------------------------------------------------


@dataclass(frozen=True)
class Env:
    command: str
    container_id: str
    netns: str  # "" when not given (allowed for DEL)
    ifname: str
    args: dict[str, str]
    path: tuple[str, ...]


def _need(env: Mapping[str, str], key: str) -> str:
    value = env.get(key, "")
    if not value:
        raise CniError(E.INVALID_ENV, f"required environment variable {key} is missing")
    return value


def parse_env(env: Mapping[str, str]) -> Env:
    command = _need(env, "CNI_COMMAND")
    if command not in COMMANDS:
        raise CniError(E.INVALID_ENV, f"unknown CNI_COMMAND {command!r}",
                       f"use one of {', '.join(COMMANDS)}")  # fmt: skip
    if command in ("VERSION", "STATUS", "GC"):
        return Env(command, "", "", "", {}, tuple(p for p in env.get("CNI_PATH", "").split(":") if p))
    cid = _need(env, "CNI_CONTAINERID")
    if not CONTAINER_ID_RE.fullmatch(cid) or len(cid) > 1024:
        raise CniError(E.INVALID_ENV, f"invalid CNI_CONTAINERID {cid[:80]!r}",
                       "it must start with a letter or digit, then letters, digits, _ . -")  # fmt: skip
    netns = env.get("CNI_NETNS", "")
    if command != "DEL" and not netns:
        raise CniError(E.INVALID_ENV, "required environment variable CNI_NETNS is missing")
    ifname = _need(env, "CNI_IFNAME")
    try:
        names.ifname(ifname, "CNI_IFNAME")
    except BurrowError as exc:
        raise CniError(E.INVALID_ENV, str(exc)) from None
    path = tuple(p for p in _need(env, "CNI_PATH").split(":") if p)
    return Env(command, cid, netns, ifname, parse_args(env.get("CNI_ARGS", "")), path)


def parse_args(text: str) -> dict[str, str]:
    """`K=V;K2=V2`; unknown keys are an error unless IgnoreUnknown is set (as host-local does)."""
    out: dict[str, str] = {}
    for item in text.split(";") if text else ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CniError(E.INVALID_ENV, f"CNI_ARGS: invalid item {item[:80]!r}", "expected KEY=VALUE")
        out[key] = value
    ignore = out.get("IgnoreUnknown", "").lower() in ("1", "true")
    unknown = sorted(set(out) - KNOWN_ARGS)
    if unknown and not ignore:
        raise CniError(E.INVALID_ENV, f"CNI_ARGS: unknown args {unknown}",
                       "set IgnoreUnknown=1 to ignore them")  # fmt: skip
    return {k: v for k, v in out.items() if k in KNOWN_ARGS}


# -- stdin config ------------------------------------------------------------------------


@dataclass(frozen=True)
class Range:
    subnet: IPNetwork
    start: IPAddress
    end: IPAddress
    gateway: IPAddress

    def __contains__(self, ip: object) -> bool:
        return isinstance(ip, IPAddress) and ip.version == self.subnet.version and (
            self.start <= ip <= self.end  # type: ignore[operator]
        )


@dataclass(frozen=True)
class RouteConf:
    dst: IPNetwork
    gw: IPAddress | None


@dataclass(frozen=True)
class NetConf:
    cni_version: str
    name: str
    type: str
    bridge: str
    mtu: int
    internal: bool
    isolate: str
    dns_names: bool
    dns_binary: str | None
    firewall_driver: str | None
    state_dir: str
    data_dir: str
    range_sets: tuple[tuple[Range, ...], ...]
    routes: tuple[RouteConf, ...]  # the non-default ones, which the engine installs as such
    dns: dict[str, Any]  # the conflist's own `dns`, merged into the result
    runtime: dict[str, Any]
    prev_result: dict[str, Any] | None
    valid_attachments: tuple[tuple[str, str], ...] | None  # GC: (containerID, ifname)
    # The result lists `ipam.routes` as configured, then for `isDefaultGateway` a default
    # route via the gateway of each family that has none there (as the reference bridge).
    ipam_routes: tuple[RouteConf, ...] = ()
    default_gateway: bool = False
    vlan: int = 0  # the bridge's `vlan`: 0 for none (the engine's bridge option, netavark 1.14)

    @property
    def network_id(self) -> str:
        # A stable 64-hex id per network name, as Podman derives one for CNI networks.
        import hashlib

        return hashlib.sha256(self.name.encode()).hexdigest()


def _bad(msg: str, details: str = "") -> CniError:
    return CniError(E.INVALID_CONFIG, msg, details)


def _get(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = obj.get(key, default)
    if value is None:
        return default
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise _bad(f"invalid type for {key!r}: got {value!r}")
    return value


def load_json(data: bytes) -> dict[str, Any]:
    if len(data) > MAX_INPUT:
        raise CniError(E.DECODE_FAILURE, f"config on stdin is larger than {MAX_INPUT} bytes")
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise CniError(E.DECODE_FAILURE, "failed to decode the config on stdin", str(exc)) from None
    if not isinstance(obj, dict):
        raise CniError(E.DECODE_FAILURE, "the config on stdin is not a JSON object")
    return obj


def check_version(obj: Mapping[str, Any]) -> str:
    version = obj.get("cniVersion")
    if not isinstance(version, str) or not version:
        raise _bad("missing cniVersion in the network config")
    if version not in SUPPORTED_VERSIONS:
        raise CniError(E.INCOMPATIBLE_VERSION, f"incompatible CNI versions: config is {version!r}",
                       f"plugin supports {list(SUPPORTED_VERSIONS)}")  # fmt: skip
    return version


def _ip(text: Any, what: str) -> IPAddress:
    return _cni_error(parse_ip, text, what)


def _net(text: Any, what: str) -> IPNetwork:
    return _cni_error(parse_net, text, what)


def _cni_error(parse: Callable[[str, str], _T], text: Any, what: str) -> _T:
    """schema's parsers, with their refusal as CNI's 'invalid network config' error."""
    try:
        return parse(text, what)
    except (BurrowError, TypeError) as exc:
        raise _bad(str(exc) if isinstance(exc, BurrowError) else f"invalid {what} {text!r}") from None


def parse_range(obj: Any) -> Range:
    if not isinstance(obj, dict):
        raise _bad(f"invalid range {obj!r}")
    subnet = _net(obj.get("subnet"), "range subnet")
    try:
        usable_subnet(subnet, "range subnet")
    except BurrowError as exc:
        raise _bad(str(exc)) from None
    if subnet.num_addresses < 4:
        raise _bad(f"range subnet {subnet} is too small")
    first, last = subnet.network_address + 1, subnet.broadcast_address
    if subnet.version == 4:
        last = last - 1
    gateway = _ip(obj["gateway"], "gateway") if obj.get("gateway") else first
    start = _ip(obj["rangeStart"], "rangeStart") if obj.get("rangeStart") else first
    end = _ip(obj["rangeEnd"], "rangeEnd") if obj.get("rangeEnd") else last
    for what, ip in (("gateway", gateway), ("rangeStart", start), ("rangeEnd", end)):
        if ip not in subnet or not first <= ip <= last:  # type: ignore[operator]
            raise _bad(f"{what} {ip} is not a usable address of {subnet}")
    if start > end:  # type: ignore[operator]
        raise _bad(f"rangeStart {start} is after rangeEnd {end}")
    return Range(subnet, start, end, gateway)


def parse_range_sets(ipam: Mapping[str, Any]) -> tuple[tuple[Range, ...], ...]:
    raw = ipam.get("ranges")
    if raw is None and ipam.get("subnet"):
        raw = [[{k: ipam.get(k) for k in ("subnet", "rangeStart", "rangeEnd", "gateway")}]]
    if not isinstance(raw, list) or not raw:
        raise _bad("ipam needs `ranges` (or `subnet`)")
    sets = []
    for raw_set in raw:
        if not isinstance(raw_set, list) or not raw_set:
            raise _bad(f"invalid range set {raw_set!r}: expected a non-empty list")
        rs = tuple(parse_range(r) for r in raw_set)
        # The engine puts one gateway per subnet on the bridge: a set's ranges share both.
        if len({(r.subnet, r.gateway) for r in rs}) != 1:
            raise CniError(
                E.UNSUPPORTED_FIELD, "a range set spanning several subnets or gateways",
                "burrow-cni needs each range set's ranges to share one subnet and gateway",
            )  # fmt: skip
        sets.append(rs)
    subnets = [rs[0].subnet for rs in sets]
    for i, a in enumerate(subnets):
        for b in subnets[i + 1 :]:
            if a.version == b.version and a.overlaps(b):
                raise _bad(f"range sets overlap: {a} and {b}")
    return tuple(sets)


def parse_routes(raw: Any) -> tuple[RouteConf, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _bad("ipam routes must be a list")
    out = []
    for r in raw:
        if not isinstance(r, dict):
            raise _bad(f"invalid route {r!r}")
        dst = _net(r.get("dst"), "route dst")
        gw = _ip(r["gw"], "route gw") if r.get("gw") else None
        if gw is not None and gw.version != dst.version:
            raise _bad(f"route to {dst}: gateway {gw} is another IP family")
        out.append(RouteConf(dst, gw))
    return tuple(out)


def _attachments(obj: Mapping[str, Any]) -> tuple[tuple[str, str], ...] | None:
    raw = obj.get("cni.dev/valid-attachments", obj.get("cni.dev/attachments"))
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise _bad("cni.dev/valid-attachments must be a list")
    out = []
    for a in raw:
        if not isinstance(a, dict) or not isinstance(a.get("containerID"), str):
            raise _bad(f"invalid attachment {a!r}")
        out.append((a["containerID"], str(a.get("ifname", ""))))
    return tuple(out)


def _names(obj: Mapping[str, Any]) -> tuple[str, str]:
    name = _get(obj, "name", str, "")
    try:
        names.network_name(name)
    except BurrowError as exc:
        raise _bad(f"invalid network name: {exc}") from None
    return name, _get(obj, "type", str, "")


def _ipam(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    ipam: dict[str, Any] = _get(obj, "ipam", dict, {})
    kind = ipam.get("type", "host-local")
    if kind != "host-local":
        raise CniError(E.UNSUPPORTED_FIELD, f"unsupported ipam type {kind!r}",
                       "burrow-cni allocates addresses itself, host-local style")  # fmt: skip
    return ipam


def _bool(obj: Mapping[str, Any], key: str, default: bool) -> bool:
    return bool(_get(obj, key, bool, default))


def _refuse_false(obj: Mapping[str, Any], key: str, why: str) -> None:
    if obj.get(key) is False:
        raise CniError(E.UNSUPPORTED_FIELD, f"{key}: false is not supported", why)


def parse_conf(obj: Mapping[str, Any]) -> NetConf:
    """The plugin's config as the runtime streams it (one plugin of a conflist)."""
    version = check_version(obj)
    name, kind = _names(obj)
    ipam = _ipam(obj)
    _refuse_false(obj, "isGateway", "the bridge always holds the gateway addresses")
    _refuse_false(obj, "ipMasq", "set `internal: true` for a network without egress")
    routes = parse_routes(ipam.get("routes"))
    defaults = {ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")}
    bridge = _get(obj, "bridge", str, DEFAULT_BRIDGE)
    isolate = _get(obj, "isolate", (str, bool), "false")
    try:
        names.ifname(bridge, "bridge")
    except BurrowError as exc:
        raise _bad(str(exc)) from None
    prev = _get(obj, "prevResult", dict, None)
    return NetConf(
        cni_version=version, name=name, type=kind, bridge=bridge,
        mtu=_get(obj, "mtu", int, 0),
        internal=_bool(obj, "internal", False),
        isolate=str(isolate).lower(),
        dns_names=_bool(obj, "dnsNames", False),
        dns_binary=_get(obj, "dnsBinary", str, None),
        firewall_driver=_get(obj, "firewallDriver", str, None),
        state_dir=_get(obj, "stateDir", str, DEFAULT_STATE_DIR),
        data_dir=_get(ipam, "dataDir", str, DEFAULT_DATA_DIR),
        range_sets=parse_range_sets(ipam),
        routes=tuple(r for r in routes if r.dst not in defaults),
        dns=_get(obj, "dns", dict, {}),
        runtime=_get(obj, "runtimeConfig", dict, {}),
        prev_result=prev,
        valid_attachments=_attachments(obj),
        ipam_routes=routes, default_gateway=_bool(obj, "isDefaultGateway", False),
        vlan=_vlan(obj),
    )  # fmt: skip


def _vlan(obj: Mapping[str, Any]) -> int:
    """The reference bridge's `vlan` (its VLAN filtering, the port's PVID). Ignoring it gave a
    container on an untagged, unfiltered bridge where the config asked for a VLAN."""
    vlan = _get(obj, "vlan", int, 0)
    if not 0 <= vlan <= 4094:
        raise _bad(f"invalid VLAN ID {vlan} (must be between 0 and 4094)")
    return int(vlan)


# -- per-container requests: static IPs, MAC, ports, aliases --------------------------------


def requested_ips(env: Env, conf: NetConf) -> tuple[IPAddress, ...]:
    """CNI_ARGS IP=a,b and runtimeConfig.ips ["a/24", ...], each at most once."""
    texts: list[str] = [t for t in env.args.get("IP", "").split(",") if t]
    raw = conf.runtime.get("ips") or []
    if not isinstance(raw, list) or not all(isinstance(t, str) for t in raw):
        raise _bad("runtimeConfig.ips must be a list of strings")
    texts.extend(raw)
    out: list[IPAddress] = []
    for t in texts:
        ip = _ip(t.split("/")[0], "requested IP")
        if ip not in out:
            out.append(ip)
    return tuple(out)


def requested_mac(env: Env, conf: NetConf) -> str | None:
    mac = conf.runtime.get("mac") or env.args.get("MAC") or None
    if mac is None:
        return None
    try:
        return names.mac(str(mac), "requested mac")
    except BurrowError as exc:
        raise _bad(str(exc)) from None


def port_mappings(conf: NetConf) -> tuple[PortMapping, ...]:
    raw = conf.runtime.get("portMappings") or []
    if not isinstance(raw, list):
        raise _bad("runtimeConfig.portMappings must be a list")
    out = []
    for p in raw:
        if not isinstance(p, dict):
            raise _bad(f"invalid port mapping {p!r}")
        host_ip = p.get("hostIP") or ""
        try:
            pm = PortMapping(
                host_ip=_str_field(host_ip, "hostIP"), container_port=_port(p, "containerPort"),
                host_port=_port(p, "hostPort"), range=1,
                protocol=_str_field(p.get("protocol") or "tcp", "protocol").lower(),
            )  # fmt: skip
            pm.validate()
        except (KeyError, TypeError, ValueError) as exc:
            raise _bad(f"invalid port mapping {p!r}: {exc}") from None
        except BurrowError as exc:
            raise _bad(str(exc)) from None
        out.append(pm)
    return tuple(out)


def _port(p: Mapping[str, Any], key: str) -> int:
    """A JSON integer, as the reference portmap plugin (Go's int) takes it: int() also made
    8080.9 into 8080, true into port 1 and "80" into 80."""
    value = p[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{key} must be an integer, got {value!r:.40}")
    return value


def _str_field(value: object, key: str) -> str:
    if not isinstance(value, str):  # str() made {"a": 1} into a host_ip to parse
        raise TypeError(f"{key} must be a string, got {value!r:.40}")
    return value


def aliases(env: Env, conf: NetConf) -> tuple[str, ...]:
    """Podman's runtimeConfig.aliases {network: [..]}, and CNI_ARGS ALIASES=a,b."""
    found: list[str] = [a for a in env.args.get("ALIASES", "").split(",") if a]
    raw = conf.runtime.get("aliases") or {}
    mine = raw.get(conf.name, []) if isinstance(raw, dict) else raw
    if not isinstance(mine, list):
        raise _bad("runtimeConfig.aliases must map the network name to a list")
    found.extend(str(a) for a in mine)
    try:
        return tuple(dict.fromkeys(names.name(a, "alias") for a in found))
    except BurrowError as exc:
        raise _bad(str(exc)) from None


def container_name(env: Env) -> str:
    """The DNS name: Kubernetes' and Podman's K8S_POD_NAME, else the container id."""
    name = env.args.get("K8S_POD_NAME") or env.container_id
    try:
        return names.name(name, "container name")
    except BurrowError as exc:
        raise CniError(E.INVALID_ENV, str(exc)) from None
