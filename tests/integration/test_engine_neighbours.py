"""A new container and its gateway know each other's MAC when setup returns (issue 15).

Without that, the container's first packet to its gateway waits for an ARP request (IPv4) or
a neighbour solicitation (IPv6) that the bridge floods to every port, and the reply for the
host's own resolution of the container: with N containers, N deliveries queued ahead of the
answer. Setup writes both entries (STALE: the kernel uses them at once and checks them by
unicast later); teardown and a failed setup remove the host's, so an address's next holder
never gets an old MAC.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from netns import neigh
from netns.nsenter import entered
from tests.engine_util import network, options, run_in_process, wait_for
from tests.nsutil import Netns, have, unique

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(not have("nft"), reason="environment: nft is not installed")]

ETH_P_ALL, ETH_P_ARP, ETH_P_IPV6 = 0x0003, 0x0806, 0x86DD
ND_SOLICIT, ND_ADVERT = 135, 136
GW4, GW6 = "10.96.0.1", "fd96::1"


def _call(config: Path, host: Netns, command: str, ctr: Netns, opts: dict[str, Any]
          ) -> tuple[int, str]:
    return run_in_process(config, host, command, ctr, opts)


def _ok(config: Path, host: Netns, command: str, ctr: Netns, opts: dict[str, Any]) -> None:
    code, text = _call(config, host, command, ctr, opts)
    assert code == 0, text


def _opts(net: dict[str, Any], i: int, mac: str | None = None) -> dict[str, Any]:
    per: dict[str, Any] = {"interface_name": "eth0", "static_ips": [f"10.96.0.{i}", f"fd96::{i:x}"]}
    if mac:
        per["static_mac"] = mac
    return options(f"c{i}", [(net, per)])


def _neighbours(ns: Netns, dev: str) -> dict[str, tuple[str, list[str]]]:
    """ip -> (lladdr, states) of the link's neighbour entries."""
    out = json.loads(ns.run(["ip", "-j", "neigh", "show", "dev", dev]).stdout or "[]")
    return {e["dst"]: (e.get("lladdr", ""), e.get("state", [])) for e in out}


def _mac(ns: Netns, dev: str) -> str:
    return str(json.loads(ns.run(["ip", "-j", "link", "show", dev]).stdout)[0]["address"])


def _sniffer(ns: Netns) -> socket.socket:
    """A packet socket on the container's eth0: every frame the bridge gives that port."""
    fd = os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with entered(fd):
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            s.bind(("eth0", 0))
    finally:
        os.close(fd)
    s.setblocking(False)
    return s


def _resolutions(sock: socket.socket) -> list[str]:
    """The address resolutions among the frames queued on `sock` (not gratuitous ARP, which
    a new interface sends when it comes up, arp_notify): "arp who-has IP" / "ns IP"."""
    seen = []
    while True:
        try:
            frame = sock.recv(2048)
        except BlockingIOError:
            return seen
        kind = struct.unpack("!H", frame[12:14])[0]
        if kind == ETH_P_ARP and len(frame) >= 42:
            sender, target = frame[28:32], frame[38:42]
            if sender != target:
                seen.append(f"arp who-has {ipaddress.IPv4Address(target)}")
        elif kind == ETH_P_IPV6 and len(frame) >= 78 and frame[20] == 58 \
                and frame[54] in (ND_SOLICIT, ND_ADVERT):
            what = "ns" if frame[54] == ND_SOLICIT else "na"
            seen.append(f"{what} {ipaddress.IPv6Address(frame[62:78])}")


def test_first_exchange_with_the_gateway_floods_nothing(
    host_ns: Netns, netns_factory: Callable[[], Netns], tmp_path: Path
) -> None:
    br = unique("nb")
    net = network(br, br, [("10.96.0.0/24", GW4), ("fd96::/64", GW6)])
    others = [netns_factory() for _ in range(3)]
    for i, ctr in enumerate(others, start=2):
        _ok(tmp_path, host_ns, "setup", ctr, _opts(net, i))
    sniffers = [_sniffer(ctr) for ctr in others]
    new = netns_factory()
    _ok(tmp_path, host_ns, "setup", new, _opts(net, 9))
    try:
        # Both ends know each other at once: the container its gateways (the bridge's MAC),
        # the host the container's addresses, in states the kernel checks (never PERMANENT).
        br_mac, ctr_mac = _mac(host_ns, br), _mac(new, "eth0")
        mine = _neighbours(new, "eth0")
        assert {ip: mine[ip][0] for ip in (GW4, GW6) if ip in mine} == {GW4: br_mac, GW6: br_mac}
        host = _neighbours(host_ns, br)
        assert {ip: host[ip][0] for ip in ("10.96.0.9", "fd96::9") if ip in host} == {
            "10.96.0.9": ctr_mac, "fd96::9": ctr_mac}
        assert not any("PERMANENT" in states for _, states in (*mine.values(), *host.values()))
        for args in (["ping", "-c1", "-W2", GW4], ["ping", "-6", "-c1", "-W2", GW6]):
            new.run(args)
        host_ns.run(["ping", "-c1", "-W2", "10.96.0.9"])
        host_ns.run(["ping", "-6", "-c1", "-W2", "fd96::9"])
        # The kernel checks a seeded entry it used (DELAY, then PROBE after
        # delay_first_probe_time, 5 s) with unicast probes to the MAC it has: both ends
        # confirm theirs without any broadcast or multicast.
        def confirmed() -> bool:
            return all("REACHABLE" in _neighbours(new, "eth0")[ip][1] for ip in (GW4, GW6)) \
                and all("REACHABLE" in _neighbours(host_ns, br)[ip][1]
                        for ip in ("10.96.0.9", "fd96::9"))
        assert wait_for(confirmed, timeout=30), (_neighbours(new, "eth0"), _neighbours(host_ns, br))
        # The other containers' ports saw no resolution of the gateway or of the new container.
        involved = {GW4, GW6, "10.96.0.9", "fd96::9"}
        for ctr, sock in zip(others, sniffers, strict=True):
            floods = [r for r in _resolutions(sock) if r.split()[-1] in involved]
            assert floods == [], (ctr.pid, floods)
    finally:
        for sock in sniffers:
            sock.close()


def test_address_reuse_with_a_new_mac_and_teardown_leaves_no_entry(
    host_ns: Netns, netns_factory: Callable[[], Netns], tmp_path: Path
) -> None:
    br = unique("nb")
    net = network(br, br, [("10.96.0.0/24", GW4), ("fd96::/64", GW6)])
    _ok(tmp_path, host_ns, "setup", netns_factory(), _opts(net, 2))  # keeps the bridge
    first, second = netns_factory(), netns_factory()
    old, fresh = "02:96:00:00:00:07", "02:96:00:00:00:77"
    _ok(tmp_path, host_ns, "setup", first, _opts(net, 7, old))
    host_ns.run(["ping", "-c1", "-W2", "10.96.0.7"])  # the host has used the entry
    host_ns.run(["ping", "-6", "-c1", "-W2", "fd96::7"])
    _ok(tmp_path, host_ns, "teardown", first, _opts(net, 7, old))
    left = _neighbours(host_ns, br)
    assert "10.96.0.7" not in left and "fd96::7" not in left, left
    # The same addresses, another MAC, right away: both ways work at once.
    _ok(tmp_path, host_ns, "setup", second, _opts(net, 7, fresh))
    host = _neighbours(host_ns, br)
    assert host["10.96.0.7"][0] == fresh and host["fd96::7"][0] == fresh, host
    host_ns.run(["ping", "-c1", "-W2", "10.96.0.7"])
    host_ns.run(["ping", "-6", "-c1", "-W2", "fd96::7"])
    second.run(["ping", "-c1", "-W2", GW4])
    second.run(["ping", "-6", "-c1", "-W2", GW6])


def test_failed_setup_removes_the_host_entries(
    host_ns: Netns, netns_factory: Callable[[], Netns], tmp_path: Path
) -> None:
    br = unique("nb")
    good = network(br, br, [("10.96.0.0/24", GW4), ("fd96::/64", GW6)])
    _ok(tmp_path, host_ns, "setup", netns_factory(), _opts(good, 2))  # keeps the bridge
    # A route via a gateway no interface reaches: it fails after the interfaces are set up
    # (via-gateway routes come last), so the rollback has the entries to remove.
    bad = {**good, "routes": [{"destination": "10.200.0.0/24", "gateway": "10.201.0.1"}]}
    ctr = netns_factory()
    code, text = _call(tmp_path, host_ns, "setup", ctr, _opts(bad, 5))
    assert code != 0 and "route" in text, text
    left = _neighbours(host_ns, br)
    assert "10.96.0.5" not in left and "fd96::5" not in left, left
    # The same setup without the bad route makes them (so the check above could see them).
    _ok(tmp_path, host_ns, "setup", ctr, _opts(good, 5))
    assert {"10.96.0.5", "fd96::5"} <= set(_neighbours(host_ns, br))


def test_gateway_entry_follows_the_bridge_mac_of_the_moment(
    host_ns: Netns, netns_factory: Callable[[], Netns], tmp_path: Path
) -> None:
    """A bridge made elsewhere (netavark) may change its MAC: setup reads it, never assumes."""
    br = unique("nb")
    net = network(br, br, [("10.96.0.0/24", GW4)])
    _ok(tmp_path, host_ns, "setup", netns_factory(), _opts(net, 2) | {
        "networks": {br: {"interface_name": "eth0", "static_ips": ["10.96.0.2"]}}})
    host_ns.run(["ip", "link", "set", br, "address", "02:96:aa:bb:cc:dd"])
    ctr = netns_factory()
    _ok(tmp_path, host_ns, "setup", ctr, _opts(net, 3) | {
        "networks": {br: {"interface_name": "eth0", "static_ips": ["10.96.0.3"]}}})
    assert _neighbours(ctr, "eth0")[GW4][0] == "02:96:aa:bb:cc:dd"
    ctr.run(["ping", "-c1", "-W2", GW4])


def test_neigh_batch_replace_and_delete(netns_factory: Callable[[], Netns]) -> None:
    """netns/neigh.py on a real link: one datagram, each entry acked; a refused entry is
    reported with its errno and does not stop the others; deleting what is gone is fine."""
    ns = netns_factory()
    ns.run(["ip", "link", "add", "nbd0", "type", "bridge"])
    ns.run(["ip", "link", "set", "nbd0", "up"])
    fd = os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with entered(fd):
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
    finally:
        os.close(fd)
    with sock:
        index = int(json.loads(ns.run(["ip", "-j", "link", "show", "nbd0"]).stdout)[0]["ifindex"])
        mac = neigh.mac_bytes("02:00:00:00:00:01")
        a, b = ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("2001:db8::1")
        assert neigh.replace(sock, index, [(a, mac), (b, mac)]) == []
        got = _neighbours(ns, "nbd0")
        assert got == {"192.0.2.1": ("02:00:00:00:00:01", ["STALE"]),
                       "2001:db8::1": ("02:00:00:00:00:01", ["STALE"])}
        # A second replace overwrites (another MAC); a bad index is refused alone.
        assert neigh.replace(sock, index, [(a, neigh.mac_bytes("02:00:00:00:00:02"))]) == []
        assert _neighbours(ns, "nbd0")["192.0.2.1"][0] == "02:00:00:00:00:02"
        refused = neigh.replace(sock, 999_999, [(a, mac)])
        assert [code for _, code in refused] == [19]  # ENODEV
        assert neigh.delete(sock, index, [a, b]) == []
        assert _neighbours(ns, "nbd0") == {}
        assert neigh.delete(sock, index, [a, b]) == []  # gone already: not an error
