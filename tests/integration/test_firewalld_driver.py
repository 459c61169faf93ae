"""The firewalld driver against a real firewalld (private D-Bus, inside the test's host netns).

Same topology as test_firewall_traffic.py (an "out" netns beside the host, bridges and
containers behind it); firewalld runs in the host netns with its own --system-config, started
by tests/firewalld_env.py, and the driver reaches it only through the private bus address.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from netns.errors import BurrowError
from netns.firewall import firewalld_plan as fp
from netns.firewall import select
from netns.firewall.firewalld import FirewalldFirewall
from netns.firewall.types import Isolate
from netns.firewalld import api
from tests.firewalld_env import FirewalldEnv, missing_tools, start
from tests.integration.test_firewall_traffic import World, ask, pm, ports, serve
from tests.nsutil import Netns, is_root


@dataclass
class FwdWorld:
    world: World
    fwd: FirewalldEnv

    @property
    def fw(self) -> Any:
        return self.world.fw


@pytest.fixture
def fwd(netns_factory: Callable[[], Netns], tmp_path: Path) -> Iterator[FwdWorld]:
    if not is_root():
        pytest.skip("environment: running firewalld in a test namespace needs root")
    missing = missing_tools()
    if missing:
        pytest.skip(f"environment: {', '.join(missing)} not installed (scripts/install --test)")
    world = World(netns_factory, tmp_path / "cfg", "nftables")  # replaced just below
    fenv = start(world.host)
    try:
        world.driver = "firewalld"
        world.fw = select("firewalld", world.config, fenv.env)
        yield FwdWorld(world, fenv)
    finally:
        fenv.stop()


def snapshot(fenv: FirewalldEnv) -> dict[str, Any]:
    """firewalld's runtime objects burrow touches, and its whole permanent config dir."""
    with fenv.api() as fw:
        runtime: dict[str, Any] = {"zones": sorted(fw.zones()), "policies": sorted(fw.policies())}
        if fp.ZONE in runtime["zones"]:
            runtime["sources"] = sorted(fw.sources(fp.ZONE))
        for name in fp.POLICY_NAMES:
            if name in runtime["policies"]:
                runtime[name] = fw.policy_settings(name)
    files = {str(p.relative_to(fenv.system_config)): p.read_text()
             for p in sorted(fenv.system_config.rglob("*")) if p.is_file()}
    return {"runtime": runtime, "permanent": files}


def test_driver_is_selected_by_name_and_env(tmp_path: Path) -> None:
    assert select("firewalld", tmp_path, {}).name == "firewalld"
    assert select(None, tmp_path, {"NETAVARK_FW": "firewalld"}).name == "firewalld"


def test_no_firewalld_is_a_clear_error(tmp_path: Path) -> None:
    fw = select("firewalld", tmp_path, {"DBUS_SYSTEM_BUS_ADDRESS": ""})  # "" = no bus at all
    with pytest.raises(BurrowError, match=r"firewall \(firewalld\): firewalld is not running"):
        fw.setup([], [])


def test_nat_forwarding_and_published_ports_v4_v6(fwd: FwdWorld) -> None:
    w = fwd.world
    net = w.network(1)
    ctr, v4, v6 = w.container(net, 2)
    serve(ctr, [80, 9100, 9101, 9102])
    serve(w.out, [7000])
    # firewalld's own rules drop forwarded container traffic before the driver's setup.
    assert ask(ctr, "tcp", "172.31.0.2", 7000, timeout=0.5).startswith("ERR")
    assert ask(w.out, "tcp", "172.31.0.1", 8080, timeout=0.5).startswith("ERR")
    w.fw.setup([net], [ports(net, v4, v6, pm(8080, 80, "tcp,udp"),
                             pm(9000, 9100, "tcp", rng=3))])
    # NAT: the outside sees the host's address, v4 and v6.
    assert ask(ctr, "tcp", "172.31.0.2", 7000) == "7000 172.31.0.1"
    assert ask(ctr, "udp", "fd31::2", 7000) == "7000 fd31::1"
    # Published ports from another netns, v4 and v6, tcp and udp; the container sees the
    # real client (DNAT, no masquerade).
    assert ask(w.out, "tcp", "172.31.0.1", 8080) == "80 172.31.0.2"
    assert ask(w.out, "udp", "172.31.0.1", 8080) == "80 172.31.0.2"
    assert ask(w.out, "tcp", "fd31::1", 8080) == "80 fd31::2"
    assert ask(w.out, "udp", "fd31::1", 8080) == "80 fd31::2"
    # A range maps one to one.
    for i in range(3):
        assert ask(w.out, "tcp", "172.31.0.1", 9000 + i) == f"{9100 + i} 172.31.0.2"
    assert ask(w.out, "tcp", "fd31::1", 9002) == "9102 fd31::2"
    # From the host netns: 127.0.0.1 (netavark_host_fwd), masqueraded to the gateway.
    assert ask(w.host, "tcp", "127.0.0.1", 8080) == "80 10.89.1.1"
    # Hairpin: the container to its own published port, masqueraded so the reply comes back.
    assert ask(ctr, "tcp", "172.31.0.1", 8080) == "80 10.89.1.1"


def test_host_ip_limits_the_forward(fwd: FwdWorld) -> None:
    w = fwd.world
    net = w.network(1)
    ctr, v4, v6 = w.container(net, 2)
    serve(ctr, [80])
    w.fw.setup([net], [ports(net, v4, v6, pm(8080, 80, host_ip="172.31.0.1"),
                             pm(8086, 80, host_ip="fd31::1"))])
    assert ask(w.out, "tcp", "172.31.0.1", 8080) == "80 172.31.0.2"
    assert ask(w.out, "tcp", "172.31.0.3", 8080, timeout=0.5).startswith("ERR")
    assert ask(w.out, "tcp", "fd31::1", 8080, timeout=0.5).startswith("ERR")
    assert ask(w.out, "tcp", "fd31::1", 8086) == "80 fd31::2"
    assert ask(w.out, "tcp", "172.31.0.1", 8086, timeout=0.5).startswith("ERR")


@pytest.mark.parametrize(("iso_a", "iso_b", "a_to_b", "b_to_a"), [
    ("false", "false", True, True),
    ("true", "true", False, False),
    ("true", "false", True, True),  # isolate=true only cuts between isolated networks
    ("strict", "false", False, False),
])
def test_isolation(fwd: FwdWorld, iso_a: Isolate, iso_b: Isolate, a_to_b: bool,
                   b_to_a: bool) -> None:
    w = fwd.world
    net_a, net_b = w.network(1, iso_a), w.network(2, iso_b)
    ca, _, _ = w.container(net_a, 2)
    cb, _, _ = w.container(net_b, 2)
    serve(ca, [5000])
    serve(cb, [5000])
    w.fw.setup([net_a], [])
    w.fw.setup([net_b], [])
    got_ab = ask(ca, "tcp", "10.89.2.2", 5000, timeout=0.5)
    got_ba = ask(cb, "tcp", "10.89.1.2", 5000, timeout=0.5)
    assert got_ab.startswith("5000 ") is a_to_b, got_ab
    assert got_ba.startswith("5000 ") is b_to_a, got_ba
    serve(w.out, [7000])
    assert ask(ca, "tcp", "172.31.0.2", 7000) == "7000 172.31.0.1"
    # The cut goes with the network that made it.
    w.fw.teardown([net_b], [])
    with fwd.fwd.api() as fw:
        rich = fw.policy_settings(fp.POLICY).get("rich_rules", [])
    assert not [r for r in rich if "10.89.2." in r or "fd89:2:" in r], rich


def test_dns_redirect_to_the_real_port(fwd: FwdWorld) -> None:
    w = fwd.world
    net = w.network(1, dns_port=10053)
    ctr, v4, v6 = w.container(net, 2)
    serve(w.host, [10053])
    w.fw.setup([net], [ports(net, v4, v6)])
    assert ask(ctr, "udp", "10.89.1.1", 53) == "10053 10.89.1.2"
    assert ask(ctr, "udp", "fd89:1::1", 53) == "10053 fd89:1::2"
    assert ask(ctr, "tcp", "10.89.1.1", 53) == "10053 10.89.1.2"


def test_teardown_leaves_firewalld_as_it_was(fwd: FwdWorld) -> None:
    w = fwd.world
    first = snapshot(fwd.fwd)
    net, other = w.network(1, dns_port=10053), w.network(2, "true")
    ctr, v4, v6 = w.container(net, 2)
    # The first setup makes the permanent zone and policies (kept, like Netavark's).
    w.fw.setup([other], [])
    w.fw.teardown([other], [])
    before = snapshot(fwd.fwd)
    assert before["runtime"]["policies"] != first["runtime"]["policies"]
    pf = ports(net, v4, v6, pm(8080, 80, "tcp,udp"), pm(9000, 9100, rng=3),
               pm(8081, 81, host_ip="172.31.0.3"), pm(8082, 82, host_ip="127.0.0.1"))
    w.fw.setup([net, other], [pf])
    during = snapshot(fwd.fwd)
    assert during["runtime"] != before["runtime"]
    w.fw.teardown([net, other], [pf])
    assert snapshot(fwd.fwd) == before
    w.fw.teardown([net, other], [pf])  # again: nothing left to remove is no error
    assert snapshot(fwd.fwd) == before


def test_reload_brings_the_rules_back(fwd: FwdWorld) -> None:
    w = fwd.world
    net = w.network(1)
    ctr, v4, v6 = w.container(net, 2)
    serve(ctr, [80])
    w.fw.setup([net], [ports(net, v4, v6, pm(8080, 80))])
    assert ask(w.out, "tcp", "172.31.0.1", 8080) == "80 172.31.0.2"
    fwd.fwd.cmd("--reload")
    assert ask(w.out, "tcp", "172.31.0.1", 8080, timeout=0.5).startswith("ERR")
    started = time.monotonic()
    w.fw.reload()  # what `firewalld-reload` runs on the Reloaded signal
    assert ask(w.out, "tcp", "172.31.0.1", 8080) == "80 172.31.0.2"
    assert ask(w.out, "tcp", "fd31::1", 8080) == "80 fd31::2"
    assert ask(w.host, "tcp", "127.0.0.1", 8080) == "80 10.89.1.1"
    assert time.monotonic() - started < 60  # a bound on a hang, not a timing claim
    # Twice is the same as once: nothing is added twice.
    w.fw.reload()
    with fwd.fwd.api() as fw:
        fwd_ports = fw.policy_settings(fp.PORTFWD).get("forward_ports", [])
    assert sorted(fwd_ports) == sorted({tuple(t) for t in fwd_ports}), fwd_ports


def test_a_running_network_survives_the_base_objects_being_made(fwd: FwdWorld) -> None:
    """Making the zone and policies reloads firewalld, which drops every runtime entry: the
    setup that does it re-applies the saved networks, so running containers keep theirs."""
    w = fwd.world
    net1, net2 = w.network(1), w.network(2)
    c1, a1, b1 = w.container(net1, 2)
    serve(c1, [80])
    w.fw.setup([net1], [ports(net1, a1, b1, pm(8080, 80))])
    with fwd.fwd.api() as fw:  # someone deletes a policy (permanent) and reloads
        fw.config_remove_policy(fp.HOSTFWD)
        fw.reload()
    c2, a2, b2 = w.container(net2, 2)
    w.fw.setup([net2], [ports(net2, a2, b2)])
    assert ask(w.out, "tcp", "172.31.0.1", 8080) == "80 172.31.0.2"
    assert ask(w.host, "tcp", "127.0.0.1", 8080) == "80 10.89.1.1"


class FailingOn:
    """The real firewalld, but the n-th call of `method` fails (fault injection)."""

    def __init__(self, fw: api.Firewalld, method: str, n: int) -> None:
        self.fw, self.method, self.left = fw, method, n

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.fw, name)
        if name != self.method:
            return real

        def call(*args: Any) -> Any:
            self.left -= 1
            if self.left == 0:
                raise BurrowError(f"injected failure in {name}")
            return real(*args)

        return call


@pytest.mark.parametrize(("method", "n"), [
    ("change_zone_of_source", 2), ("set_policy_settings", 1), ("set_policy_settings", 2),
])
def test_a_failed_setup_is_rolled_back(fwd: FwdWorld, method: str, n: int) -> None:
    w = fwd.world
    net = w.network(1)
    ctr, v4, v6 = w.container(net, 2)
    w.fw.setup([w.network(3)], [])  # the base objects exist; their making is not undone
    before = snapshot(fwd.fwd)
    from contextlib import contextmanager

    @contextmanager
    def failing() -> Iterator[Any]:
        with api.connect(fwd.fwd.env) as real:
            assert real is not None
            yield FailingOn(real, method, n)

    faulty = FirewalldFirewall(w.fw.store, fwd.fwd.env, connect=failing)
    pf = ports(net, v4, v6, pm(8080, 80), pm(8081, 81, host_ip="172.31.0.3"))
    with pytest.raises(BurrowError, match="injected failure"):
        faulty.setup([net], [pf])
    assert snapshot(fwd.fwd) == before
    # And the state files say nothing of it: a reload adds nothing back.
    w.fw.reload()
    assert snapshot(fwd.fwd)["runtime"] == before["runtime"]


def test_cli_setup_teardown_and_firewall_reload(fwd: FwdWorld, tmp_path: Path) -> None:
    """Through the Netavark CLI, as Podman calls it: setup, a `firewall-cmd --reload` (which
    drops the runtime entries), `firewall-reload`, teardown."""
    from tests.engine_util import World as CliWorld
    from tests.engine_util import network, options, port

    w = fwd.world
    cli = CliWorld(w.host, tmp_path / "cli", "firewalld", env=fwd.fwd.env)
    n = network("bfddnet", "bfddbr0", [("10.89.9.0/24", "10.89.9.1"), ("fd89:9::/64", "fd89:9::1")])
    opts = options("c1", [(n, {"interface_name": "eth0", "static_ips": ["10.89.9.2", "fd89:9::2"]})],
                   [port(8080, 80), port(8443, 443, host_ip="172.31.0.1")])
    ctr = w.factory()
    serve(ctr, [80, 443])

    def state() -> tuple[list[str], list[Any], list[str]]:
        with fwd.fwd.api() as fw:
            pol = fw.policy_settings(fp.PORTFWD)
            return (sorted(fw.sources(fp.ZONE)), sorted(pol.get("forward_ports", [])),
                    sorted(pol.get("rich_rules", [])))

    res = cli.netavark("setup", ctr, opts)
    assert "eth0" in res.stdout
    want = (["10.89.9.0/24", "fd89:9::/64"],
            [("8080", "tcp", "80", "10.89.9.2"), ("8080", "tcp", "80", "fd89:9::2")],
            [fp.forward_rule("ipv4", "172.31.0.1", "8443", "tcp", "443", "10.89.9.2")])
    assert state() == want
    assert ask(w.out, "tcp", "172.31.0.1", 8080) == "80 172.31.0.2"
    fwd.fwd.cmd("--reload")
    assert state()[1:] == ([], [])
    cli.netavark("firewall-reload", None, None)
    assert state() == want
    assert ask(w.out, "tcp", "172.31.0.1", 8443) == "443 172.31.0.2"
    cli.netavark("teardown", ctr, opts)
    assert state() == ([], [], [])


def test_invalid_input_changes_nothing(fwd: FwdWorld) -> None:
    """Everything is checked before the first D-Bus call: not even the zone gets made."""
    w = fwd.world
    net = w.network(1)
    ctr, v4, v6 = w.container(net, 2)
    before = snapshot(fwd.fwd)
    for bad in (pm(8080, 80, "icmp"), pm(8080, 80, host_ip="not-an-ip"), pm(65535, 80, rng=2)):
        with pytest.raises(BurrowError, match=r"firewall \(firewalld\): invalid"):
            w.fw.setup([net], [ports(net, v4, v6, pm(9090, 90), bad)])
    assert snapshot(fwd.fwd) == before
    assert fp.ZONE not in before["runtime"]["zones"]


def test_teardown_goes_on_past_a_failure_and_reports_it(fwd: FwdWorld) -> None:
    w = fwd.world
    net = w.network(1)
    ctr, v4, v6 = w.container(net, 2)
    w.fw.setup([w.network(3)], [])
    before = snapshot(fwd.fwd)
    pf = ports(net, v4, v6, pm(8080, 80))
    w.fw.setup([net], [pf])
    from contextlib import contextmanager

    @contextmanager
    def failing() -> Iterator[Any]:
        with api.connect(fwd.fwd.env) as real:
            assert real is not None
            yield FailingOn(real, "set_policy_settings", 1)

    faulty = FirewalldFirewall(w.fw.store, fwd.fwd.env, connect=failing)
    with pytest.raises(BurrowError, match="injected failure") as err:
        faulty.teardown([net], [pf])
    assert "update policy" in str(err.value)
    after = snapshot(fwd.fwd)["runtime"]
    # The other policies and the sources went all the same; only the failed one is left.
    assert after["sources"] == before["runtime"]["sources"]
    left = [name for name in fp.POLICY_NAMES if after[name] != before["runtime"][name]]
    assert len(left) == 1, left
    # The state files stay, so running the teardown again finishes the job.
    w.fw.teardown([net], [pf])
    assert snapshot(fwd.fwd) == before


def test_reload_with_nothing_saved_changes_nothing(fwd: FwdWorld) -> None:
    before = snapshot(fwd.fwd)
    fwd.world.fw.reload()
    assert snapshot(fwd.fwd) == before  # no zone or policy made, no firewalld reload
