"""Networks in Podman's JSON format, and IPAM (pure: no files, no locks; see store.py)."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from netns import ipam, names, schema, validate
from netns.errors import BurrowError
from rootless import until
from rootless.records import rfc3339

MAX_NAME = 63  # a DNS label: sandbox names and aliases are looked up by name
DEFAULT_NETWORK = "burrow"
DEFAULT_V4 = "10.88.0.0/16"
DEFAULT_V6 = "fd88::/64"
V4_POOL = ipaddress.ip_network("10.89.0.0/16")
V6_POOL_BASE = 0xfd890000  # fd89:0:N::/64 for N = 0..65535
BRIDGE_PREFIX = "burrow"
MIN_MTU, MAX_MTU = 68, 65535
# Options that make sense for one driver only; the engine would refuse them later anyway.
DRIVER_OPTS = {"bridge": ("mtu", "isolate", "metric"), "macvlan": ("mtu", "metric", "parent", "mode")}
VALID_OPTS = tuple(dict.fromkeys(k for opts in DRIVER_OPTS.values() for k in opts))
# The engine also takes `source`, which needs per-MAC lists this CLI has no flag for.
MACVLAN_MODES = tuple(m for m in validate.MACVLAN_MODES if m != "source")
IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address


def check_name(name: str, what: str) -> str:
    """The one check of a sandbox, network or alias name from the user: the engine's name rule
    (no path or config-file separators), and at most a DNS label's length (names are looked
    up in DNS). Every name that becomes a path passes here (`rootless.store`)."""
    return names.name(name, f"{what} name", MAX_NAME)


@dataclass(frozen=True)
class NetworkRequest:
    """`burrow network create` flags, Podman's names."""
    name: str
    subnets: tuple[str, ...] = ()
    gateways: tuple[str, ...] = ()
    ip_ranges: tuple[str, ...] = ()
    ipv6: bool = False
    internal: bool = False
    disable_dns: bool = False
    dns: tuple[str, ...] = ()
    driver: str = "bridge"
    options: tuple[tuple[str, str], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()


# Podman refuses these as network names: they are network modes (`--network none`).
RESERVED = ("none", "host", "private", "slirp4netns", "pasta")
FILTER_KEYS = ("name", "id", "driver", "label", "label!", "dangling", "until")
PRUNE_FILTER_KEYS = ("label", "label!", "until")  # what `podman network prune --filter` takes


def parse_labels(raw: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """`--label KEY[=VALUE]` (Podman: a label without a value has the empty value)."""
    out: list[tuple[str, str]] = []
    for item in raw:
        k, _, v = item.partition("=")
        if not k or any(ch.isspace() for ch in k):
            raise BurrowError(f"invalid --label {item!r}: expected KEY[=VALUE]")
        out.append((k, v))
    return tuple(out)


def parse_filters(raw: Sequence[str], keys: Sequence[str] = FILTER_KEYS) -> dict[str, list[str]]:
    """`--filter KEY=VALUE`s, grouped by key; every key and pattern checked here. An `until`
    is kept as epoch seconds, so "10m" means ten minutes before this call."""
    out: dict[str, list[str]] = {}
    now = time.time()
    for item in raw:
        k, sep, v = item.partition("=")
        if k.endswith("!"):
            k, sep, v = item.partition("!=")
            k += "!"
        if not sep or k not in keys:
            raise BurrowError(f"invalid --filter {item!r}: use KEY=VALUE with KEY one of "
                              f"{', '.join(keys)}")
        if k in ("name", "id"):
            try:
                re.compile(v)
            except re.error as e:
                raise BurrowError(f"invalid --filter {item!r}: {e}") from None
        if k == "dangling" and v not in ("true", "false", "1", "0"):
            raise BurrowError(f"invalid --filter {item!r}: dangling takes true or false")
        if k == "until":
            v = repr(until.until(v, now))
        out.setdefault(k, []).append(v)
    return out


def _label_matches(labels: Mapping[str, str], want: str) -> bool:
    k, sep, v = want.partition("=")
    return k in labels and (not sep or labels[k] == v)


def filter_networks(nets: Sequence[dict[str, Any]], filters: Mapping[str, Sequence[str]],
                    in_use: Callable[[str], bool]) -> list[dict[str, Any]]:
    """Podman's `network ls --filter`: values of one key are alternatives, keys all apply;
    name and id are regular expressions (searched, not anchored), as Podman's are."""
    def test(net: dict[str, Any], key: str, v: str) -> bool:
        if key == "name":
            return re.search(v, net["name"]) is not None
        if key == "id":
            return re.search(v, net.get("id", "")) is not None
        if key == "driver":
            return bool(net.get("driver") == v)
        if key == "label":
            return _label_matches(net.get("labels") or {}, v)
        if key == "label!":
            return not _label_matches(net.get("labels") or {}, v)
        if key == "until":
            return until.created_before(net.get("created", ""), float(v))
        return (v in ("true", "1")) != in_use(net["name"])  # dangling

    def keep(net: dict[str, Any]) -> bool:
        return all((all if k == "label!" else any)(test(net, k, v) for v in vs)
                   for k, vs in filters.items())

    return [n for n in nets if keep(n)]


def parse_opts(raw: Sequence[str]) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for item in raw:
        for kv in item.split(","):
            k, sep, v = kv.partition("=")
            if not sep:
                raise BurrowError(f"invalid --opt {kv!r}: expected KEY=VALUE")
            k = k.strip()
            if k not in VALID_OPTS:
                raise BurrowError(f"unsupported --opt {k!r}; supported: {', '.join(VALID_OPTS)}")
            if k in ("mtu", "metric") and not (v.isascii() and v.isdigit()):  # "²".isdigit()
                raise BurrowError(f"invalid --opt {k}={v}: expected a number")
            if k == "mtu" and not MIN_MTU <= int(v) <= MAX_MTU:
                # The kernel refuses it only at the first sandbox's setup; say so now.
                raise BurrowError(f"invalid --opt mtu={v}: must be {MIN_MTU}-{MAX_MTU} "
                                  "(IPv4's minimum to the largest a link takes)")
            if k == "isolate" and v not in ("true", "false", "strict"):
                raise BurrowError(f"invalid --opt isolate={v}: expected true, false or strict")
            if k == "mode" and v not in MACVLAN_MODES:
                raise BurrowError(f"invalid --opt mode={v}: expected one of "
                                  f"{', '.join(MACVLAN_MODES)}")
            out.append((k, v))
    return tuple(out)


def _net(text: str) -> IPNet:
    try:
        if "%" in text:  # ipaddress takes "fd00::%zone/64"; the engine refuses it
            raise ValueError(text)
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise BurrowError(f"invalid subnet {text!r}: expected CIDR, e.g. 10.89.5.0/24") from None


def _v6_candidates() -> Iterable[IPNet]:
    for n in range(1, 65536):
        yield ipaddress.IPv6Network(((V6_POOL_BASE << 96) | (n << 80), 64))


def free_subnets(used: Iterable[IPNet], v6: bool) -> IPNet:
    if v6:
        return ipam.free_subnet(_v6_candidates(), used, exhausted=(
            "no free IPv6 subnet left in fd89::/32; remove unused networks (`burrow network prune`)"))
    return ipam.free_subnet(V4_POOL.subnets(new_prefix=24), used, exhausted=(
        "no free IPv4 subnet left in 10.89.0.0/16; remove unused networks (`burrow network prune`)"))


def _check_driver(req: NetworkRequest, rootless: bool) -> None:
    if req.driver not in validate.DRIVERS:
        raise BurrowError(f"unknown driver {req.driver!r}; use bridge (or macvlan, as root)")
    if req.driver == "macvlan":
        if rootless:
            raise BurrowError("driver macvlan needs real root: a rootless namespace has no host "
                              "interface to attach to; use bridge, or run as root")
        if not req.subnets:
            raise BurrowError(f"macvlan network {req.name} needs --subnet (the subnet of the "
                              "parent's LAN): burrow hands out static addresses, it runs no DHCP")
        if req.internal:
            raise BurrowError("--internal applies to bridge networks only")
    wrong = [k for k, _ in req.options if k not in DRIVER_OPTS[req.driver]]
    if wrong:
        raise BurrowError(f"--opt {wrong[0]} does not apply to driver {req.driver}; it takes "
                          f"{', '.join(DRIVER_OPTS[req.driver])}")


def make_network(req: NetworkRequest, existing: Mapping[str, dict[str, Any]],
                 default_mtu: int | None, rootless: bool = True,
                 host: Sequence[IPNet] = ()) -> dict[str, Any]:
    """A Podman network config from the request; validates everything, touches nothing.

    bridge networks get a bridge of their own (`burrowN`); macvlan ones (real root only) sit
    on `--opt parent=IF`, or on the interface of the host's default route, as in Podman.
    `host`: the subnets the host routes already (rootful: `host_subnets()`), which a bridge
    network must not take."""
    check_name(req.name, "network")
    if req.name in RESERVED:
        raise BurrowError(f"cannot create network with name {req.name!r} because it conflicts "
                          "with a network mode (as in Podman); pick another name")
    if req.name in existing:
        raise BurrowError(f"network {req.name} already exists; remove it with "
                          f"`burrow network rm {req.name}` or pick another name")
    _check_driver(req, rootless)
    for d in req.dns:
        try:
            schema.parse_ip(d, "--dns")  # the engine's parser: no "%zone" the engine would refuse
        except BurrowError:
            raise BurrowError(f"invalid --dns {d!r}: expected an IP address") from None
    host = host if req.driver == "bridge" else ()  # macvlan's subnet is its parent's LAN
    subnets = [_subnet_entry(req, i, n) for i, n in enumerate(_choose_subnets(req, existing, host))]
    opts = dict(req.options)
    if req.driver == "macvlan":
        # Podman's shape: the parent is the network's interface, not an option. Behind no
        # connector, so the rootless default MTU does not apply. No DNS: aardvark (and
        # burrow-dns) serve bridge networks only.
        interface = opts.pop("parent", "")
        dns_enabled = False
    else:
        if default_mtu and "mtu" not in opts:
            opts["mtu"] = str(default_mtu)
        used_if = {n.get("network_interface") for n in existing.values()}
        idx = next(i for i in range(10000) if f"{BRIDGE_PREFIX}{i}" not in used_if)
        interface = f"{BRIDGE_PREFIX}{idx}"
        dns_enabled = not req.disable_dns
    net: dict[str, Any] = {
        "name": req.name,
        "id": hashlib.sha256(f"{req.name}{time.time_ns()}{os.getpid()}".encode()).hexdigest(),
        "driver": req.driver,
        "network_interface": interface,
        "created": rfc3339(time.time()),
        "subnets": subnets,
        "ipv6_enabled": any(_net(s["subnet"]).version == 6 for s in subnets),
        "internal": req.internal,
        "dns_enabled": dns_enabled,
        "ipam_options": {"driver": "host-local"},
    }
    if opts:
        net["options"] = opts
    if req.dns:
        net["network_dns_servers"] = list(req.dns)
    if req.labels:
        net["labels"] = dict(req.labels)
    return net


def _choose_subnets(req: NetworkRequest, existing: Mapping[str, dict[str, Any]],
                    host: Sequence[IPNet] = ()) -> list[IPNet]:
    """The request's subnets, checked against each other, every network's and the host's;
    free ones from the pools where the request gives none (v4, and v6 with --ipv6)."""
    used = [_net(s["subnet"]) for n in existing.values() for s in n.get("subnets", [])]
    used += host
    nets: list[IPNet] = [schema.usable_subnet(_net(s), "--subnet") for s in req.subnets]
    for i, a in enumerate(nets):
        for b in nets[i + 1:]:
            if a.overlaps(b):
                raise BurrowError(f"subnets {a} and {b} overlap")
        for name, other in existing.items():
            for osub in other.get("subnets", []):
                if a.overlaps(_net(osub["subnet"])):
                    raise BurrowError(f"subnet {a} is already used by network {name}; pick "
                                      "another --subnet")
        for h in host:
            if a.version == h.version and a.overlaps(h):
                raise BurrowError(f"subnet {a} is already used on the host ({h} is routed "
                                  "there without a gateway; see `ip route`): a bridge with it "
                                  "would take that traffic; pick another --subnet")
    if not any(n.version == 4 for n in nets) and not (req.ipv6 and nets):
        if not nets:
            nets.append(free_subnets(used, v6=False))
    if req.ipv6 and not any(n.version == 6 for n in nets):
        nets.append(free_subnets(used + nets, v6=True))
    if len(req.gateways) > len(nets):
        raise BurrowError("more --gateway than --subnet values")
    return nets


def _subnet_entry(req: NetworkRequest, i: int, n: IPNet) -> dict[str, Any]:
    """Podman's subnet object: the gateway (the i-th --gateway, else the first address) and
    the lease range from an --ip-range of the same family."""
    if n.num_addresses < 4:
        raise BurrowError(f"subnet {n} is too small for a gateway and a sandbox")
    gw = schema.parse_ip(req.gateways[i], "--gateway") if i < len(req.gateways) else n[1]
    if gw not in n or gw in (n.network_address, n.broadcast_address) and n.version == 4:
        raise BurrowError(f"gateway {gw} is not a usable address of subnet {n}")
    sub: dict[str, Any] = {"subnet": str(n), "gateway": str(gw)}
    ranges = [r for r in req.ip_ranges if _net(r).version == n.version]
    if ranges:
        rng = _net(ranges[0])
        if not rng.subnet_of(n):  # type: ignore[arg-type]
            raise BurrowError(f"--ip-range {rng} is not inside subnet {n}")
        sub["lease_range"] = {"start_ip": str(rng[1] if rng.num_addresses > 2 else rng[0]),
                              "end_ip": str(rng[-2] if rng.num_addresses > 2 else rng[-1])}
    return sub


def default_request(host: Sequence[IPNet] = (),
                    existing: Mapping[str, dict[str, Any]] | None = None) -> NetworkRequest:
    """The default network; where the host routes one of its subnets already (rootful
    Podman's default network is 10.88.0.0/16 too), a free one from the pool instead."""
    used = [*host, *(_net(s["subnet"]) for n in (existing or {}).values()
                     for s in n.get("subnets", []))]

    def pick(default: str, v6: bool) -> str:
        net = _net(default)
        taken = any(net.version == h.version and net.overlaps(h) for h in host)
        return str(free_subnets(used, v6=v6)) if taken else default

    return NetworkRequest(DEFAULT_NETWORK, subnets=(pick(DEFAULT_V4, False), pick(DEFAULT_V6, True)),
                          ipv6=True)


def host_subnets() -> tuple[IPNet, ...]:
    """The subnets this netns (the host's, for rootful burrow) routes without a gateway."""
    from netns import onlink

    try:
        return onlink.subnets()
    except (OSError, ValueError) as e:
        raise BurrowError(f"cannot read the host's routes to check subnets against: {e}") from None


def allocate(network: dict[str, Any], used: set[str], static: Sequence[str]) -> list[str]:
    """One address per subnet (static ones matched by family), never one in `used`."""
    out: list[str] = []
    statics = [ipaddress.ip_address(s) for s in static]
    for sub in network.get("subnets", []):
        n = _net(sub["subnet"])
        gw = sub.get("gateway")
        want = [s for s in statics if s.version == n.version]
        if want:
            ip = want[0]
            if ip not in n:
                raise BurrowError(f"address {ip} is not in network {network['name']}'s subnet "
                                  f"{n}")
            if str(ip) in used or str(ip) == gw or ip == n.network_address:
                raise BurrowError(f"address {ip} is already in use on network "
                                  f"{network['name']}; pick another or let burrow choose")
            out.append(str(ip))
            continue
        lr = sub.get("lease_range") or {}
        start = ipaddress.ip_address(lr["start_ip"]) if lr.get("start_ip") else n[2]
        end = ipaddress.ip_address(lr["end_ip"]) if lr.get("end_ip") else (
            n[-2] if n.version == 4 else n[min(n.num_addresses - 1, 65535)])
        ip_int = int(start)
        while ip_int <= int(end):
            cand: IPAddr = ipaddress.ip_address(ip_int)
            if str(cand) not in used and str(cand) != gw and cand in n:
                out.append(str(cand))
                break
            ip_int += 1
        else:
            raise BurrowError(f"network {network['name']} has no free address in {n}")
    for s in statics:
        if not any(ipaddress.ip_address(a).version == s.version for a in out):
            raise BurrowError(f"address {s} does not match any subnet of network "
                              f"{network['name']}")
    return out
