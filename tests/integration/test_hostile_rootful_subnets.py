"""Rootful burrow's bridges live in the host's netns: a network must never take a subnet the
host routes already. Rootful Podman's default network (podman0, 10.88.0.1/16) is burrow's
default too.

Before: `burrow sandbox create` on such a host made burrow0 with 10.88.0.1/16 beside podman0,
and gave the sandbox 10.88.0.2, the address of the Podman container already there: two
routes for one subnet, and traffic for the sandbox (its published ports' DNAT included) went
to whichever the host routes first. `burrow network create --subnet` of a host-routed subnet
was accepted (Podman refuses it: "already used on the host"). Now the default network takes
a free subnet from the pool where the host routes its own, an explicit one is refused with the
fix, and macvlan (whose subnet is its parent's LAN by design) is unchanged.
Run as root in a throwaway "host" netns (tests/integration/test_rootful_cli.Rootful).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

from tests.integration.test_rootful_cli import Rootful
from tests.nsutil import Netns, unique

pytestmark = pytest.mark.root


@pytest.fixture
def podman_host(netns_factory: Callable[[], Netns]) -> Iterator[tuple[Rootful, Netns]]:
    """The host with rootful Podman's default network on it: podman0 10.88.0.1/16, and a
    "container" at 10.88.0.2."""
    host, ctr = netns_factory(), netns_factory()
    rf = Rootful(host)
    br, veth = unique("ad3p"), unique("ad3v")
    host.run(["sh", "-c", f"ip link add {br} type bridge && ip addr add 10.88.0.1/16 dev {br} "
              f"&& ip link set {br} up && ip link add {veth} type veth peer name eth0 netns "
              f"{ctr.pid} && ip link set {veth} master {br} up"])
    ctr.run(["sh", "-c", "ip addr add 10.88.0.2/16 dev eth0 && ip link set eth0 up"])
    yield rf, ctr
    left = rf.close()
    assert not left, f"processes left after `burrow down`: {left}"


def _routes_to(host: Netns, subnet: str) -> list[str]:
    return [ln for ln in host.run(["ip", "-4", "route"]).stdout.splitlines()
            if ln.startswith(subnet + " ")]


def test_the_default_network_avoids_a_subnet_the_host_routes(
        podman_host: tuple[Rootful, Netns]) -> None:
    rf, ctr = podman_host
    out = rf.burrow("sandbox", "create", "web", check=True).out.split()
    assert out[0] == "web" and not out[1].startswith("10.88."), out
    assert len(_routes_to(rf.ns, "10.88.0.0/16")) == 1  # podman0's alone
    net = json.loads(rf.burrow("network", "inspect", "burrow", check=True).out)
    net = net[0] if isinstance(net, list) else net
    assert [s["subnet"] for s in net["subnets"]][0].startswith("10.89."), net
    # Both are reachable from the host: the Podman container and the sandbox.
    assert rf.ns.run(["ping", "-c1", "-W2", "10.88.0.2"], check=False).returncode == 0
    assert rf.ns.run(["ping", "-c1", "-W2", out[1]], check=False).returncode == 0


def test_an_explicit_subnet_the_host_routes_is_refused(
        podman_host: tuple[Rootful, Netns]) -> None:
    rf, _ = podman_host
    for subnet in ("10.88.5.0/24", rf.v4.rsplit(".", 1)[0] + ".0/24"):  # podman0's, the uplink's
        res = rf.burrow("network", "create", "clash", "--subnet", subnet)
        assert res.rc != 0, res
        assert f"subnet {subnet} is already used on the host" in res.err, res.err
        assert "pick another --subnet" in res.err
    assert "clash" not in rf.burrow("network", "ls", check=True).out


def test_an_automatic_subnet_skips_the_ones_the_host_routes(
        podman_host: tuple[Rootful, Netns]) -> None:
    rf, _ = podman_host
    dev = unique("ad3u")
    rf.ns.run(["sh", "-c", f"ip link add {dev} type veth peer name {dev}p && "
               f"ip addr add 10.89.0.1/24 dev {dev} && ip link set {dev} up"])
    rf.burrow("network", "create", "auto", check=True)
    net = json.loads(rf.burrow("network", "inspect", "auto", check=True).out)
    net = net[0] if isinstance(net, list) else net
    assert net["subnets"][0]["subnet"] == "10.89.1.0/24", net


def test_macvlan_still_takes_its_parents_lan(podman_host: tuple[Rootful, Netns]) -> None:
    rf, _ = podman_host
    parent = next(n for n in rf.ns.link_names() if n.startswith("rfh"))
    lan = rf.v4.rsplit(".", 1)[0] + ".0/24"
    rf.burrow("network", "create", "lan", "-d", "macvlan", "--subnet", lan, "--opt",
              f"parent={parent}", check=True)
