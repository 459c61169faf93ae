"""The engine's `StatusBlock` -> a CNI result, and results read back from `prevResult` (pure).

1.0.0 and 1.1.0 results have no per-IP `version`; 0.3.x and 0.4.0 results need it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from netns.cni import errors as E
from netns.cni.config import NetConf
from netns.cni.errors import CniError
from netns.schema import NetAddress, StatusBlock

if TYPE_CHECKING:
    from netns.cni.hostside import HostSide

Json = dict[str, Any]
DEFAULTS = {4: "0.0.0.0/0", 6: "::/0"}


def legacy(version: str) -> bool:
    return version.startswith("0.")


def render(conf: NetConf, status: Mapping[str, StatusBlock], ifname: str, netns: str,
           host: HostSide | None = None) -> Json:
    """Our interfaces (as the reference bridge: the bridge, the veth's host end, then the
    container's, which the ips point at), addresses, routes and DNS, appended to
    `prevResult` when chained."""
    prev = conf.prev_result or {}
    interfaces: list[Json] = [dict(i) for i in prev.get("interfaces") or () if isinstance(i, dict)]
    ips: list[Json] = [dict(i) for i in prev.get("ips") or () if isinstance(i, dict)]
    routes: list[Json] = [dict(r) for r in prev.get("routes") or () if isinstance(r, dict)]
    block = status.get(conf.name)
    if block is not None and ifname in block.interfaces:
        iface = block.interfaces[ifname]
        if host is not None:
            interfaces.append({"name": conf.bridge, "mac": host.bridge_mac})
            interfaces.append({"name": host.veth, "mac": host.veth_mac})
        index = len(interfaces)
        interfaces.append({"name": ifname, "mac": iface.mac_address, "sandbox": netns})
        for sub in iface.subnets:
            ip: Json = {"address": str(sub.ipnet), "interface": index}
            if sub.gateway is not None:
                ip["gateway"] = str(sub.gateway)
            ips.append(ip)
        routes.extend(_routes(conf, iface.subnets))
    out: Json = {"cniVersion": conf.cni_version, "interfaces": interfaces, "ips": ips}
    if routes:
        out["routes"] = routes
    out["dns"] = _dns(conf, block, prev.get("dns"))
    return convert(out, conf.cni_version)


def _routes(conf: NetConf, subnets: Sequence[NetAddress]) -> list[Json]:
    """`ipam.routes` as configured (a `gw` only where one was given: the gateway is implied,
    as in host-local's result), then `isDefaultGateway`'s default route of each family that
    has none among them, via that family's gateway (as the reference bridge adds it)."""
    out: list[Json] = [{"dst": str(r.dst), **({"gw": str(r.gw)} if r.gw else {})}
                       for r in conf.ipam_routes]
    if conf.default_gateway and not conf.internal:
        have = {r.dst.version for r in conf.ipam_routes if str(r.dst) == DEFAULTS[r.dst.version]}
        for sub in subnets:
            v = sub.ipnet.version
            if sub.gateway is not None and v not in have:
                out.append({"dst": DEFAULTS[v], "gw": str(sub.gateway)})
                have.add(v)
    return out


def _dns(conf: NetConf, block: StatusBlock | None, prev: Any) -> Json:
    dns: Json = dict(prev) if isinstance(prev, dict) else {}
    for key, value in conf.dns.items():
        dns.setdefault(key, value)
    if block is not None and block.dns_server_ips:
        dns["nameservers"] = _merge(block.dns_server_ips, dns.get("nameservers"))
    if block is not None and block.dns_search_domains:
        dns["search"] = _merge(block.dns_search_domains, dns.get("search"))
    return dns


def _merge(first: Sequence[str], rest: Any) -> list[str]:
    items = list(first) + [x for x in rest or () if isinstance(x, str)]
    return list(dict.fromkeys(items))


def convert(result: Json, version: str) -> Json:
    """Set or drop the per-IP `version` for the result's spec version."""
    out = dict(result, cniVersion=version)
    ips = []
    for ip in result.get("ips") or ():
        ip = dict(ip)
        if legacy(version):
            ip["version"] = str(ipaddress.ip_interface(ip["address"]).version)
        else:
            ip.pop("version", None)
        ips.append(ip)
    out["ips"] = ips
    return out


def prev_routes(conf: NetConf) -> list[tuple[str, str | None]]:
    """(destination, gateway or None) of each route prevResult lists; CHECK looks for them."""
    raw = (conf.prev_result or {}).get("routes") or []
    if not isinstance(raw, list):
        raise CniError(E.INVALID_CONFIG, "prevResult.routes must be a list", f"got {type(raw).__name__}")
    out = []
    for r in raw:
        try:
            dst = ipaddress.ip_network(r["dst"], strict=False)
            gw = str(ipaddress.ip_address(r["gw"])) if r.get("gw") else None
        except (KeyError, TypeError, ValueError):
            raise CniError(E.INVALID_CONFIG, f"invalid route in prevResult: {r!r:.80}") from None
        out.append((str(dst), gw))
    return out


def prev_addresses(conf: NetConf, ifname: str) -> list[tuple[str, str]]:
    """(address/prefix, mac) of `ifname` as prevResult lists them; CHECK compares these."""
    prev = conf.prev_result
    if prev is None:
        raise CniError(E.INVALID_CONFIG, "CHECK needs prevResult in the config")
    interfaces, ips = prev.get("interfaces") or [], prev.get("ips") or []
    for key, value in (("interfaces", interfaces), ("ips", ips)):
        if not isinstance(value, list):  # an int or a map here was an "internal error"
            raise CniError(E.INVALID_CONFIG, f"prevResult.{key} must be a list",
                           f"got {type(value).__name__}")
    out = []
    for ip in ips:
        index = ip.get("interface") if isinstance(ip, dict) else None
        if not isinstance(index, int) or not 0 <= index < len(interfaces):
            continue
        iface = interfaces[index]
        if isinstance(iface, dict) and iface.get("name") == ifname and iface.get("sandbox"):
            out.append((str(ip.get("address")), str(iface.get("mac", ""))))
    return out
