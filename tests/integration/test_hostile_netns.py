"""The host's own network namespace given as the container's, to burrow-netavark and
burrow-cni, tried for real in a throwaway host netns with an uplink (`ad-up`).

Before: `setup /proc/self/ns/net` put the container's address, veth end and default route on
the host and exited 0; `teardown /proc/self/ns/net` with interface_name "ad-up" deleted the
host's uplink and its default route, exit 0. Now both refuse the namespace (teardown still
removes the host side: rules, bridge), and the uplink stays.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cni_util import PLUGIN, CniWorld, cid
from tests.engine_util import World, network, options
from tests.nsutil import Netns, unique

pytestmark = pytest.mark.root

OWN = "/proc/self/ns/net"  # whoever opens it: the caller's own namespace, here the host's


@pytest.fixture
def uplinked(host_ns: Netns) -> Netns:
    host_ns.run(["ip", "link", "add", "ad-up", "type", "veth", "peer", "name", "ad-up-peer"])
    host_ns.run(["ip", "link", "set", "ad-up", "up"])
    host_ns.run(["ip", "addr", "add", "192.0.2.2/24", "dev", "ad-up"])
    host_ns.run(["ip", "route", "add", "default", "via", "192.0.2.1", "dev", "ad-up", "onlink"])
    return host_ns


def _host(ns: Netns) -> tuple[str, str]:
    return ns.run(["ip", "-o", "addr"]).stdout, ns.run(["ip", "route"]).stdout


def test_netavark_refuses_the_hosts_own_namespace(uplinked: Netns, tmp_path: Path) -> None:
    world = World(uplinked, tmp_path / "cfg", "nftables")
    net = network("adnet", unique("ad-"), [("10.97.7.0/24", "10.97.7.1")])
    opts = options("web", [(net, {"interface_name": "eth0", "static_ips": ["10.97.7.5"]})])
    before = _host(uplinked)
    res = world.netavark("setup", None, opts, check=False, netns_path=OWN)
    if res.returncode == 0:
        after = _host(uplinked)
        world.netavark("teardown", None, opts, check=False, netns_path=OWN)
        pytest.fail(f"set up the host as a container; its routes became:\n{after[1]}")
    assert "is the host's own network namespace" in json.loads(res.stdout)["error"], res.stdout
    assert _host(uplinked) == before
    # A teardown naming the host's uplink as the container's interface leaves it alone.
    opts["networks"]["adnet"]["interface_name"] = "ad-up"
    world.netavark("teardown", None, opts, check=False, netns_path=OWN)
    assert _host(uplinked) == before


def test_cni_refuses_the_hosts_own_namespace(
    uplinked: Netns, tmp_path: Path, netns_factory: Callable[[], Netns]
) -> None:
    if not PLUGIN.exists():
        pytest.skip("environment: burrow-cni is not installed (run scripts/install)")
    world = CniWorld(uplinked, tmp_path)
    conf, c = world.conf(), cid()
    before = _host(uplinked)
    r = world.call("ADD", conf, cid=c, netns=OWN)
    if r.code == 0:
        after = _host(uplinked)
        world.call("DEL", conf, cid=c, netns=OWN)
        pytest.fail(f"ADD set up the host as a container; its routes became:\n{after[1]}")
    assert "is the host's own network namespace" in r.json["msg"], r.stdout
    assert _host(uplinked) == before
    # An ADD into a real container, then a DEL that names the host and its uplink.
    ctr = netns_factory()
    world.add(ctr, conf, c)
    r = world.call("DEL", conf, cid=c, netns=OWN, ifname="ad-up")
    assert "ad-up" in uplinked.run(["ip", "-o", "link"]).stdout
    world.call("DEL", conf, cid=c, netns=ctr.path)


@pytest.mark.parametrize("link", ["ad-up", "lo"])
def test_a_teardown_never_deletes_a_host_link_named_as_the_bridge(
    uplinked: Netns, ctr_ns: Netns, tmp_path: Path, link: str
) -> None:
    """A network whose network_interface is a host link that is no bridge: setup refuses it,
    and Podman then runs teardown, which deleted the host's uplink (and its default route) as
    an unused bridge, or failed on lo with "Operation not supported"."""
    world = World(uplinked, tmp_path / "cfg", "nftables")
    net = network("adnet", link, [("10.97.7.0/24", "10.97.7.1")])
    opts = options("web", [(net, {"interface_name": "eth0", "static_ips": ["10.97.7.5"]})])
    before = _host(uplinked)
    res = world.netavark("setup", ctr_ns, opts, check=False)
    assert res.returncode == 1 and "already exists but is a" in res.stdout, res.stdout
    res = world.netavark("teardown", ctr_ns, opts, check=False)
    assert _host(uplinked) == before
    # As after any setup that never got the container its interface (netavark's exit 1).
    assert "does not exist in the container namespace" in json.loads(res.stdout)["error"]
