"""CHECK: is the container's networking still what ADD made (prevResult) and what IPAM holds?

Reads the kernel with `ip -j` (inside the netns through `nsenter --net=`): CHECK is rare and
not on a container's start path, so it execs rather than load netlink code.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from netns.cni import errors as E
from netns.cni.errors import CniError


def _ip_json(argv: list[str], what: str) -> list[dict[str, Any]]:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CniError(E.IO_FAILURE, f"{what}: {exc}") from None
    if res.returncode != 0:
        raise CniError(E.CHECK_FAILED, f"{what}: {res.stderr.strip() or 'not found'}")
    data = json.loads(res.stdout or "[]")
    return data if isinstance(data, list) else []


def interface(netns: str, ifname: str) -> tuple[str, set[str]]:
    """(mac, {address/prefix}) of `ifname` inside `netns`."""
    data = _ip_json(["nsenter", f"--net={netns}", "ip", "-j", "addr", "show", "dev", ifname],
                    f"interface {ifname} in {netns}")  # fmt: skip
    if not data:
        raise CniError(E.CHECK_FAILED, f"interface {ifname} is missing in {netns}")
    link = data[0]
    addrs = {f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", []) if "local" in a}
    return str(link.get("address", "")), addrs


def routes(netns: str) -> set[tuple[str, str | None]]:
    """(destination, gateway) of every route in the netns's main table, both families."""
    out: set[tuple[str, str | None]] = set()
    for fam, default, host in (("-4", "0.0.0.0/0", "/32"), ("-6", "::/0", "/128")):
        for r in _ip_json(["nsenter", f"--net={netns}", "ip", "-j", fam, "route", "show"],
                          f"routes in {netns}"):  # fmt: skip
            dst = str(r.get("dst", ""))
            dst = default if dst == "default" else dst if "/" in dst else dst + host
            out.add((dst, r.get("gateway")))
    return out


def compare_routes(expected: list[tuple[str, str | None]], have: set[tuple[str, str | None]]) -> None:
    """Every prevResult route is in the container (with its gateway, where it names one), as
    the reference bridge plugin's CHECK asks (ValidateExpectedRoute)."""
    for dst, gw in expected:
        if not any(d == dst and (gw is None or g == gw) for d, g in have):
            via = f" via {gw}" if gw else ""
            raise CniError(E.CHECK_FAILED, f"route to {dst}{via} is missing in the container")


def bridge_exists(bridge: str) -> None:
    _ip_json(["ip", "-j", "link", "show", "dev", bridge], f"bridge {bridge}")


def compare(expected: list[tuple[str, str]], mac: str, addrs: set[str], held: set[str]) -> None:
    """Every prevResult address is on the interface with its MAC, and still reserved."""
    if not expected:
        raise CniError(E.CHECK_FAILED, "prevResult lists no address on this interface")
    for address, want_mac in expected:
        if want_mac and want_mac.lower() != mac.lower():
            raise CniError(E.CHECK_FAILED, f"interface MAC is {mac}, prevResult says {want_mac}")
        if address not in addrs:
            raise CniError(E.CHECK_FAILED, f"address {address} is missing on the interface")
        if address.split("/")[0] not in held:
            raise CniError(E.CHECK_FAILED, f"address {address} is no longer reserved in IPAM")
