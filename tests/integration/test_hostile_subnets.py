"""Subnets no bridge network can live in, refused where they enter (`burrow-netavark setup`,
`create`, and burrow-cni's ranges), tried for real in a throwaway host netns.

What each did before: `::/0` (or `0.0.0.0/1` on an internal network) set up, and the bridge's
kernel route took the host's own traffic; a loopback range set up, so containers reached host
services from 127.x, a source they trust as local; a multicast range failed mid-setup and left
the bridge behind; an IPv4-mapped range set up, then every teardown failed ("Device or
resource busy": nft lists those addresses in the IPv4 form) and its rules stayed for good.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.engine_util import World, network, options
from tests.nsutil import Netns, unique

pytestmark = pytest.mark.root

CASES = [
    ("::/0", "fd97::1", "fd97::5", "unspecified address"),
    ("0.0.0.0/1", "10.97.7.1", "10.97.7.5", "unspecified address"),
    ("127.97.0.0/24", "127.97.0.1", "127.97.0.5", "loopback range"),
    ("ff05::/64", "ff05::1", "ff05::5", "multicast range"),
    ("::ffff:10.97.7.0/120", "::ffff:10.97.7.1", "::ffff:10.97.7.5", "IPv4-mapped"),
]
IDS = ["v6_default", "v4_half", "loopback", "multicast", "v4_mapped"]


@pytest.fixture
def world(host_ns: Netns, tmp_path: Path) -> World:
    return World(host_ns, tmp_path / "cfg", "nftables")


def _host(w: World) -> tuple[str, str, str]:
    ip = w.host.run(["ip", "-o", "link"]).stdout + w.host.run(["ip", "-o", "addr"]).stdout
    routes = w.host.run(["ip", "route"]).stdout + w.host.run(["ip", "-6", "route"]).stdout
    return ip, routes, w.host.run(["nft", "list", "ruleset"]).stdout


def _request(subnet: str, gateway: str, ip: str) -> dict[str, Any]:
    net = network("adsub", unique("ad-"), [(subnet, gateway)], internal=subnet == "0.0.0.0/1")
    return options("web", [(net, {"interface_name": "eth0", "static_ips": [ip]})])


@pytest.mark.parametrize(("subnet", "gateway", "ip", "message"), CASES, ids=IDS)
def test_a_subnet_no_bridge_can_use_is_refused_before_any_change(
    world: World, ctr_ns: Netns, subnet: str, gateway: str, ip: str, message: str
) -> None:
    before = _host(world)
    opts = _request(subnet, gateway, ip)
    res = world.netavark("setup", ctr_ns, opts, check=False)
    if res.returncode == 0:
        routes = _host(world)[1]
        world.netavark("teardown", ctr_ns, opts, check=False)
        pytest.fail(f"set up {subnet}; host routes were:\n{routes}\nleft after teardown: "
                    f"{'rules' if _host(world)[2] != before[2] else 'nothing'}")
    error = json.loads(res.stdout)["error"]
    assert message in error and "use a private range" in error, error
    assert _host(world) == before
    assert "eth0" not in ctr_ns.run(["ip", "-o", "link"]).stdout


@pytest.mark.parametrize(("subnet", "gateway", "ip", "message"), CASES, ids=IDS)
def test_create_refuses_it_too(world: World, subnet: str, gateway: str, ip: str,
                               message: str) -> None:
    req = {"network": {"name": "adsub", "driver": "bridge", "network_interface": "ad-br9",
                       "subnets": [{"subnet": subnet, "gateway": gateway}],
                       "ipv6_enabled": ":" in subnet}, "used": {}, "options": {}}
    res = world.netavark("create", None, req, check=False)
    assert res.returncode == 1 and message in json.loads(res.stdout)["error"], res.stdout


def test_a_bridge_whose_address_the_kernel_refuses_is_rolled_back(
    world: World, ctr_ns: Netns
) -> None:
    """A dual-stack network on a host with IPv6 off: the new bridge's IPv6 gateway is refused
    (EACCES) after the bridge was made, and the failed setup left the bridge, with its IPv4
    gateway, behind (the bridge had no undo yet)."""
    for conf in ("all", "default"):
        world.host.run(["sysctl", "-qw", f"net.ipv6.conf.{conf}.disable_ipv6=1"])
    before = _host(world)
    net = network("adsub", unique("ad-"), [("10.97.7.0/24", "10.97.7.1"), ("fd97::/64", "fd97::1")])
    opts = options("web", [(net, {"interface_name": "eth0", "static_ips": ["10.97.7.5", "fd97::5"]})])
    res = world.netavark("setup", ctr_ns, opts, check=False)
    assert res.returncode == 1 and "set up bridge" in res.stdout, res.stdout
    assert _host(world) == before
