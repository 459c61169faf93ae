"""Netavark 1.4's firewalld glue, with a real firewalld: the iptables and nftables backends
bind each container subnet to firewalld's `trusted` zone while its network is up.

Topology (all inside namespaces this test made):
    out ns eth0 172.31.9.2/24 ── bfdcoXXX 172.31.9.1/24 host ns (firewalld runs here)
    ctr ns eth0 10.213.5.2/24 fd13:5::2/64 ── bridge 10.213.5.1/24 fd13:5::1/64
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.engine_util import World, network, options, port, request, start_server
from tests.firewalld_env import FirewalldEnv
from tests.nsutil import Netns, unique

pytestmark = pytest.mark.root

V4, V6 = "10.213.5.0/24", "fd13:5::/64"


def _world(driver: str, host: Netns, out: Netns, tmp: Path, env: dict[str, str]) -> World:
    link = unique("bfdco")
    host.run(["sh", "-ec", f"ip link add {link} type veth peer name eth0 netns {out.pid}; "
              f"ip addr add 172.31.9.1/24 dev {link}; ip link set {link} up"])
    out.run(["sh", "-ec", "ip addr add 172.31.9.2/24 dev eth0; ip link set eth0 up; "
             "ip route add default via 172.31.9.1"])
    return World(host, tmp / "config", driver, env=env)


def _opts(name: str, net: dict[str, object], last: int, ports: list[dict[str, object]] | None = None
          ) -> dict[str, object]:
    per = {"interface_name": "eth0", "static_ips": [f"10.213.5.{last}", f"fd13:5::{last}"]}
    return options(name, [(net, per)], ports)


def _sources(fenv: FirewalldEnv) -> list[str]:
    with fenv.api() as fw:
        return sorted(fw.sources("trusted"))


@pytest.mark.parametrize("driver", ["iptables", "nftables"])
def test_subnets_trusted_while_network_is_up(
    driver: str, firewalld: FirewalldEnv, host_ns: Netns,
    netns_factory: Callable[[], Netns], tmp_path: Path,
) -> None:
    out, c1, c2 = netns_factory(), netns_factory(), netns_factory()
    w = _world(driver, host_ns, out, tmp_path, firewalld.env)
    net = network("bfdcnet", unique("bfdcb"), [(V4, "10.213.5.1"), (V6, "fd13:5::1")])
    o1 = _opts("c1", net, 2, [port(8080, 7002)])
    o2 = _opts("c2", net, 3)
    assert _sources(firewalld) == []
    w.setup(c1, o1)
    assert _sources(firewalld) == sorted([V4, V6])
    w.setup(c2, o2)  # the same network again: still bound once
    assert _sources(firewalld) == sorted([V4, V6])

    # Container traffic passes firewalld's own rules: out through the host (masquerade), to a
    # service on the host's gateway address, and a published port from outside.
    start_server(out, 7000)
    start_server(host_ns, 7001)
    start_server(c1, 7002)
    assert request(c1, "172.31.9.2", 7000) == "hello 7000"
    assert request(c1, "10.213.5.1", 7001) == "hello 7001"
    assert request(out, "172.31.9.1", 8080) == "hello 7002"
    # ...because of the binding: unbound, firewalld rejects the same traffic.
    with firewalld.api() as fw:
        fw.remove_source("trusted", V4)
    assert request(c1, "172.31.9.2", 7000).startswith("FAILED")
    assert request(c1, "10.213.5.1", 7001).startswith("FAILED")
    # firewall-reload binds every persisted network again (as after firewalld's own reload).
    w.netavark("firewall-reload", None, None)
    assert _sources(firewalld) == sorted([V4, V6])
    assert request(c1, "172.31.9.2", 7000) == "hello 7000"

    w.teardown(c1, o1)  # the bridge stays for c2: its subnets stay trusted
    assert _sources(firewalld) == sorted([V4, V6])
    w.teardown(c2, o2)  # the last one: the network is gone, and so is the binding
    assert _sources(firewalld) == []
    # Runtime only: firewalld's permanent config was not touched.
    assert not (firewalld.system_config / "zones").exists() or \
        not list((firewalld.system_config / "zones").iterdir())


def test_empty_bus_address_leaves_firewalld_alone(
    firewalld: FirewalldEnv, host_ns: Netns, netns_factory: Callable[[], Netns], tmp_path: Path,
) -> None:
    # DBUS_SYSTEM_BUS_ADDRESS= turns detection off, as for Netavark (its suite relies on it).
    out, c1 = netns_factory(), netns_factory()
    w = _world("nftables", host_ns, out, tmp_path, {"DBUS_SYSTEM_BUS_ADDRESS": ""})
    net = network("bfdcnet", unique("bfdcb"), [(V4, "10.213.5.1")])
    o1 = options("c1", [(net, {"interface_name": "eth0", "static_ips": ["10.213.5.2"]})])
    w.setup(c1, o1)
    assert _sources(firewalld) == []
    w.teardown(c1, o1)


def test_subnet_bound_to_another_zone_moves_to_trusted(
    firewalld: FirewalldEnv, host_ns: Netns, netns_factory: Callable[[], Netns], tmp_path: Path,
) -> None:
    # Netavark's changeZoneOfSource: a subnet an admin put in another zone is moved.
    out, c1 = netns_factory(), netns_factory()
    w = _world("iptables", host_ns, out, tmp_path, firewalld.env)
    with firewalld.api() as fw:
        fw.add_source("public", V4)
    net = network("bfdcnet", unique("bfdcb"), [(V4, "10.213.5.1")])
    o1 = options("c1", [(net, {"interface_name": "eth0", "static_ips": ["10.213.5.2"]})])
    w.setup(c1, o1)
    with firewalld.api() as fw:
        assert fw.zone_of_source(V4) == "trusted"
        assert fw.sources("public") == []
    w.teardown(c1, o1)
    assert _sources(firewalld) == []
