"""firewalld_plan: intent -> zone sources and policy entries (pure, no firewalld)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest

from netns.errors import BurrowError
from netns.firewall import firewalld_plan as fp
from netns.firewall.rules import build
from netns.firewall.types import Isolate, NetworkFw, PortFw
from netns.schema import PortMapping


def net(idx: int, isolate: Isolate = "false", dns_port: int | None = None) -> NetworkFw:
    return NetworkFw(name=f"n{idx}", id=f"{idx:02x}" * 32, bridge=f"br{idx}",
                     subnets=(ip_network(f"10.89.{idx}.0/24"), ip_network(f"fd89:{idx}::/64")),
                     gateways=(ip_address(f"10.89.{idx}.1"), ip_address(f"fd89:{idx}::1")),
                     isolate=isolate, dns_port=dns_port)


def pm(host: int, ctr: int, proto: str = "tcp", host_ip: str = "", rng: int = 1) -> PortMapping:
    return PortMapping(host_ip=host_ip, container_port=ctr, host_port=host, range=rng,
                       protocol=proto)


def plan_ports(*maps: PortMapping) -> fp.Plan:
    n = net(1)
    pf = PortFw("c" * 64, n, IPv4Address("10.89.1.2"), IPv6Address("fd89:1::2"), maps)
    return fp.port_plan(build([n], [pf]).ports)


def test_base_layout_is_netavarks_names_and_zones() -> None:
    new = {p.name: p for p in fp.base_policies((2, 3, 1))}
    assert list(new) == ["netavark_policy", "netavark_portfwd", "netavark_host_fwd",
                         "netavark_zone_acc"]
    assert new[fp.POLICY].settings() == {
        "ingress_zones": ["netavark_zone"], "egress_zones": ["ANY"], "target": "ACCEPT",
        "masquerade": True}
    assert new[fp.PORTFWD].egress == "HOST"
    assert (new[fp.HOSTFWD].ingress, new[fp.HOSTFWD].egress) == ("HOST", "ANY")
    # Only the host's own 127.0.0.1 connections are masqueraded into the zone (not clients').
    assert new[fp.ZONEACC].settings() == {
        "ingress_zones": ["ANY"], "egress_zones": ["netavark_zone"], "target": "CONTINUE",
        "rich_rules": ['rule family="ipv4" source address="127.0.0.0/8" masquerade']}
    # Before firewalld 2.2 a forward with to-addr can't have egress HOST.
    old = {p.name: p for p in fp.base_policies((1, 3, 3))}
    assert old[fp.PORTFWD].egress == "ANY"


@pytest.mark.parametrize(("text", "want"), [
    ("1.3.3", (1, 3, 3)), ("2.2.0", (2, 2, 0)), ("2.3.1-rc1", (2, 3, 1)), ("", (0,)),
    ("garbage", (0,)),
])
def test_parse_version(text: str, want: tuple[int, ...]) -> None:
    assert fp.parse_version(text) == want


def test_network_plan_sources_dns_and_v6_masquerade() -> None:
    plan = fp.network_plan([net(1, dns_port=10053)])
    assert plan.sources == ("10.89.1.0/24", "fd89:1::/64")
    assert plan.entries(fp.PORTFWD).rich_rules == (
        'rule family="ipv4" destination address="10.89.1.1" forward-port port="53" '
        'protocol="udp" to-port="10053" to-addr="10.89.1.1"',
        'rule family="ipv4" destination address="10.89.1.1" forward-port port="53" '
        'protocol="tcp" to-port="10053" to-addr="10.89.1.1"',
        'rule family="ipv6" destination address="fd89:1::1" forward-port port="53" '
        'protocol="udp" to-port="10053" to-addr="fd89:1::1"',
        'rule family="ipv6" destination address="fd89:1::1" forward-port port="53" '
        'protocol="tcp" to-port="10053" to-addr="fd89:1::1"',
    )
    assert plan.entries(fp.POLICY).rich_rules == (
        'rule family="ipv6" source address="fd89:1::/64" masquerade',)
    assert not plan.entries(fp.ZONEACC)
    assert not fp.network_plan([net(2, dns_port=53)]).entries(fp.PORTFWD)


def test_wildcard_port_is_a_forward_port_per_family_and_a_localhost_rule() -> None:
    plan = plan_ports(pm(8080, 80, "tcp,udp"))
    assert plan.entries(fp.PORTFWD).forward_ports == (
        ("8080", "tcp", "80", "10.89.1.2"), ("8080", "udp", "80", "10.89.1.2"),
        ("8080", "tcp", "80", "fd89:1::2"), ("8080", "udp", "80", "fd89:1::2"))
    assert plan.entries(fp.HOSTFWD).rich_rules == (
        'rule family="ipv4" destination address="127.0.0.1" forward-port port="8080" '
        'protocol="tcp" to-port="80" to-addr="10.89.1.2"',
        'rule family="ipv4" destination address="127.0.0.1" forward-port port="8080" '
        'protocol="udp" to-port="80" to-addr="10.89.1.2"')


def test_range_is_one_entry_per_port() -> None:
    fwd = plan_ports(pm(9000, 9100, rng=3)).entries(fp.PORTFWD).forward_ports
    assert [f for f in fwd if ":" not in f[3]] == [
        ("9000", "tcp", "9100", "10.89.1.2"), ("9001", "tcp", "9101", "10.89.1.2"),
        ("9002", "tcp", "9102", "10.89.1.2")]


def test_host_ip_variants() -> None:
    v4 = plan_ports(pm(8080, 80, host_ip="172.31.0.3"))
    assert v4.entries(fp.PORTFWD) == fp.Entries(rich_rules=(
        'rule family="ipv4" destination address="172.31.0.3" forward-port port="8080" '
        'protocol="tcp" to-port="80" to-addr="10.89.1.2"',))
    assert not v4.entries(fp.HOSTFWD)
    v6 = plan_ports(pm(8080, 80, host_ip="fd31::1")).entries(fp.PORTFWD).rich_rules
    assert v6 == ('rule family="ipv6" destination address="fd31::1" forward-port port="8080" '
                  'protocol="tcp" to-port="80" to-addr="fd89:1::2"',)
    local = plan_ports(pm(8080, 80, host_ip="127.0.0.1"))
    assert not local.entries(fp.PORTFWD) and len(local.entries(fp.HOSTFWD).rich_rules) == 1
    assert plan_ports(pm(8080, 80, host_ip="::1")) == fp.Plan()  # as Netavark: nothing
    wild4 = plan_ports(pm(8080, 80, host_ip="0.0.0.0")).entries(fp.PORTFWD).forward_ports
    assert wild4 == (("8080", "tcp", "80", "10.89.1.2"),)
    wild6 = plan_ports(pm(8080, 80, host_ip="::")).entries(fp.PORTFWD).forward_ports
    assert wild6 == (("8080", "tcp", "80", "fd89:1::2"),)


@pytest.mark.parametrize(("a", "b", "cut"), [
    ("false", "false", False), ("true", "false", False), ("true", "true", True),
    ("strict", "false", True), ("false", "strict", True), ("strict", "true", True),
])
def test_isolation_pairs(a: Isolate, b: Isolate, cut: bool) -> None:
    rules = fp.isolation_plan([net(1, a), net(2, b)]).entries(fp.POLICY).rich_rules
    if not cut:
        assert rules == ()
        return
    assert set(rules) == {
        'rule family="ipv4" source address="10.89.1.0/24" destination address="10.89.2.0/24" drop',
        'rule family="ipv4" source address="10.89.2.0/24" destination address="10.89.1.0/24" drop',
        'rule family="ipv6" source address="fd89:1::/64" destination address="fd89:2::/64" drop',
        'rule family="ipv6" source address="fd89:2::/64" destination address="fd89:1::/64" drop',
    }


def test_isolation_of_one_network_is_nothing() -> None:
    assert fp.isolation_plan([net(1, "strict")]) == fp.Plan()


def test_merge_adds_once_removes_and_names_only_changed_keys() -> None:
    cur = fp.Current(forward_ports=(("1", "tcp", "1", "10.0.0.9"),), rich_rules=("keep",))
    add = fp.Entries((("2", "tcp", "2", "10.0.0.2"),), ())
    upd = fp.merge("p", cur, add)
    assert upd.forward_ports == (("1", "tcp", "1", "10.0.0.9"), ("2", "tcp", "2", "10.0.0.2"))
    assert upd.rich_rules is None  # untouched key: not sent
    again = fp.Current(forward_ports=upd.forward_ports, rich_rules=("keep",))
    assert not fp.merge("p", again, add)  # already there: nothing to write
    gone = fp.merge("p", again, remove=add)
    assert gone.forward_ports == (("1", "tcp", "1", "10.0.0.9"),)


def test_merge_drop_to_removes_every_forward_to_that_address_only() -> None:
    cur = fp.Current(
        forward_ports=(("1", "tcp", "1", "10.0.0.2"), ("1", "tcp", "1", "10.0.0.25")),
        rich_rules=(fp.forward_rule("ipv4", "1.2.3.4", "1", "tcp", "1", "10.0.0.2"),
                    fp.forward_rule("ipv4", "1.2.3.4", "1", "tcp", "1", "10.0.0.25"), "other"))
    upd = fp.merge("p", cur, drop_to=["10.0.0.2"])
    assert upd.forward_ports == (("1", "tcp", "1", "10.0.0.25"),)
    assert upd.rich_rules == (cur.rich_rules[1], "other")


def test_restore_puts_back_only_what_the_update_named() -> None:
    cur = fp.Current(forward_ports=(("1", "tcp", "1", "a"),), rich_rules=("r",))
    upd = fp.Update("p", forward_ports=(), rich_rules=None)
    assert fp.restore(upd, cur) == fp.Update("p", (("1", "tcp", "1", "a"),), None)


@pytest.mark.parametrize("settings", [
    None, [], {"forward_ports": [("1", "tcp", "1")]}, {"forward_ports": "x"},
    {"rich_rules": [1]}, {"forward_ports": [("1", "tcp", "1", 5)]},
])
def test_current_refuses_bad_shapes(settings: object) -> None:
    with pytest.raises(BurrowError, match="firewalld policy p"):
        fp.Current.parse("p", settings)


def test_current_reads_firewalld_answer() -> None:
    cur = fp.Current.parse("p", {"forward_ports": [["1", "tcp", "2", "a"]], "rich_rules": ["r"],
                                 "target": "CONTINUE"})
    assert cur.forward_ports == (("1", "tcp", "2", "a"),) and cur.rich_rules == ("r",)


def test_plans_add_up_without_duplicates() -> None:
    a = fp.network_plan([net(1)])
    assert a + a == a
    assert (a + fp.network_plan([net(2)])).sources == (
        "10.89.1.0/24", "fd89:1::/64", "10.89.2.0/24", "fd89:2::/64")


def test_driver_refuses_outbound_addr_before_any_dbus_call(tmp_path: Path) -> None:
    from dataclasses import replace

    from netns.firewall.firewalld import FirewalldFirewall
    from netns.firewall.state import StateStore

    def no_bus() -> Any:
        raise AssertionError("no D-Bus call may happen")

    fw = FirewalldFirewall(StateStore(tmp_path), {}, connect=no_bus)
    n = replace(net(1), outbound4=IPv4Address("172.31.0.3"))
    with pytest.raises(BurrowError, match=r"firewall \(firewalld\): network 'n1': "
                       r"outbound_addr4/outbound_addr6 is not supported by the firewalld driver"):
        fw.setup([n], [])
    assert not (tmp_path / "firewall" / "networks").exists()
