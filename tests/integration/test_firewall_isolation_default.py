"""The isolation default of a bridge network without an `isolate` option (issue 10): as the
Netavark version each firewall driver stands in for, pinned once the network is up.

- nftables stands in for Netavark 2.x, whose src/network/bridge.rs get_isolate_option says
  "if no option default to strict isolation" (containers/netavark at 005013be; Podman 6.0's
  docs: the default is isolate=strict): networks without the option can't reach each other.
- iptables stands in for Netavark 1.4 (Podman 4.x), which isolates nothing unless asked.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.engine_util import World, network, options, ping
from tests.nsutil import Netns, unique


@pytest.fixture(params=["nftables", "iptables"])
def world(request: pytest.FixtureRequest, host_ns: Netns, tmp_path: Path) -> World:
    return World(host_ns, tmp_path / "cfg", request.param)


def isolation_of(world: World, net: dict[str, object]) -> str:
    state = world.config / "firewall" / "networks" / str(net["id"])
    return str(json.loads(state.read_text())["isolation"])


def test_default_is_the_stood_in_versions(world: World,
                                          netns_factory: Callable[[], Netns]) -> None:
    c1, c2 = netns_factory(), netns_factory()
    n1 = network(unique("n"), unique("bfwi"), [("10.67.0.0/24", "10.67.0.1")])
    n2 = network(unique("n"), unique("bfwi"), [("10.68.0.0/24", "10.68.0.1")])
    o1 = options("a", [(n1, {"interface_name": "eth0", "static_ips": ["10.67.0.2"]})])
    o2 = options("b", [(n2, {"interface_name": "eth0", "static_ips": ["10.68.0.2"]})])
    world.setup(c1, o1)
    world.setup(c2, o2)
    assert ping(c1, "10.67.0.1")  # its own gateway: isolation is between networks only
    if world.firewall == "nftables":
        assert isolation_of(world, n1) == isolation_of(world, n2) == "Strict"
        assert not ping(c1, "10.68.0.2") and not ping(c2, "10.67.0.2")
    else:
        assert isolation_of(world, n1) == isolation_of(world, n2) == "Never"
        assert ping(c1, "10.68.0.2") and ping(c2, "10.67.0.2")
    world.teardown(c1, o1)
    world.teardown(c2, o2)


def test_default_is_pinned_while_the_network_runs(world: World,
                                                  netns_factory: Callable[[], Netns]) -> None:
    """A later container's request naming another isolation does not change it under the
    running ones; after the network's last container is gone, a new setup decides again."""
    c1, c2, peer = netns_factory(), netns_factory(), netns_factory()
    n1 = network(unique("n"), unique("bfwi"), [("10.69.0.0/24", "10.69.0.1")])
    other = network(unique("n"), unique("bfwi"), [("10.70.0.0/24", "10.70.0.1")],
                    options={"isolate": "false"})
    op = options("p", [(other, {"interface_name": "eth0", "static_ips": ["10.70.0.2"]})])
    world.setup(peer, op)
    o1 = options("a", [(n1, {"interface_name": "eth0", "static_ips": ["10.69.0.2"]})])
    world.setup(c1, o1)
    first = isolation_of(world, n1)
    flipped = {**n1, "options": {"isolate": "true" if first == "Never" else "false"}}
    o2 = options("b", [(flipped, {"interface_name": "eth0", "static_ips": ["10.69.0.3"]})])
    world.setup(c2, o2)
    assert isolation_of(world, n1) == first
    reach = ping(c2, "10.70.0.2")
    assert reach == (first == "Never")  # strict (nftables' default) drops into any network
    world.teardown(c2, o2)
    world.teardown(c1, o1)
    world.teardown(peer, op)
