"""The typed engine API, called the way a non-Netavark front door (CNI, a Python caller) would:
`netns.schema` values in, StatusBlocks out, no JSON text anywhere. This thread enters a
throwaway "host" netns; the container is another throwaway netns, passed as a path or an fd."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from netns import engine
from netns.errors import BurrowError
from netns.nsenter import entered
from netns.schema import (
    Network,
    NetworkOptions,
    PerNetworkOptions,
    Route,
    StatusBlock,
    Subnet,
)
from tests.nsutil import Netns, unique


@pytest.fixture
def ctx(host_ns: Netns, tmp_path: Path) -> Iterator[engine.Context]:
    fd = os.open(host_ns.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with entered(fd):
            yield engine.Context.build(config=str(tmp_path / "cfg"), rootless=False,
                                       aardvark_binary="/nonexistent", firewall_driver="none",
                                       env={})
    finally:
        os.close(fd)


def request(bridge: str) -> NetworkOptions:
    net = Network(
        name="api", id="a" * 64, driver="bridge", network_interface=bridge,
        subnets=(Subnet(ipaddress.ip_network("10.95.0.0/24"), ipaddress.ip_address("10.95.0.1")),),
    )  # fmt: skip
    per = PerNetworkOptions("eth0", static_ips=(ipaddress.ip_address("10.95.0.7"),),
                            static_mac="92:d0:c6:0a:29:77")
    return NetworkOptions("b" * 64, "api-ctr", (("api", per),), {"api": net})


@pytest.mark.parametrize("by", ["path", "fd"])
def test_setup_and_teardown_with_typed_values(
    ctx: engine.Context, host_ns: Netns, ctr_ns: Netns, by: str
) -> None:
    bridge = unique("be-")
    opts = request(bridge)
    fd = os.open(ctr_ns.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        netns: str | int = ctr_ns.path if by == "path" else fd
        status = engine.setup(ctx, opts, netns)
        assert set(status) == {"api"} and isinstance(status["api"], StatusBlock)
        iface = status["api"].interfaces["eth0"]
        assert iface.mac_address == "92:d0:c6:0a:29:77"
        assert [str(s.ipnet) for s in iface.subnets] == ["10.95.0.7/24"]
        assert "10.95.0.7/24" in ctr_ns.run(["ip", "-o", "addr", "show", "eth0"]).stdout
        assert bridge in host_ns.run(["ip", "-o", "link"]).stdout
        engine.teardown(ctx, opts, netns)
        assert "eth0" not in ctr_ns.run(["ip", "-o", "link"]).stdout
        assert bridge not in host_ns.run(["ip", "-o", "link"]).stdout
        os.fstat(fd)  # an fd passed in stays the caller's: still open
    finally:
        os.close(fd)


def test_a_failure_leaves_nothing_applied(ctx: engine.Context, host_ns: Netns, ctr_ns: Netns) -> None:
    """The second network fails mid-apply (a route via an off-link gateway): the undo stack
    removes both networks' veths and bridges."""
    first, second = unique("be-"), unique("be-")
    opts = request(first)
    net2 = Network(
        name="api2", id="c" * 64, driver="bridge", network_interface=second,
        subnets=(Subnet(ipaddress.ip_network("10.95.1.0/24"), ipaddress.ip_address("10.95.1.1")),),
        routes=(Route(ipaddress.ip_network("10.200.0.0/16"), ipaddress.ip_address("10.250.0.1")),),
    )  # fmt: skip
    per2 = PerNetworkOptions("eth1", static_ips=(ipaddress.ip_address("10.95.1.7"),))
    opts = NetworkOptions(opts.container_id, opts.container_name,
                          (*opts.networks, ("api2", per2)), {**opts.network_info, "api2": net2})
    with pytest.raises(BurrowError, match="network api2: add route 10.200.0.0/16 via 10.250.0.1"):
        engine.setup(ctx, opts, ctr_ns.path)
    assert "eth" not in ctr_ns.run(["ip", "-o", "link"]).stdout
    links = host_ns.run(["ip", "-o", "link"]).stdout
    assert first not in links and second not in links
