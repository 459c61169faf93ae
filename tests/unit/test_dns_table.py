"""Who sees what: the table's scopes, built from parsed networks."""

from __future__ import annotations

from netns.dns.config import parse_network
from netns.dns.table import build

NETS = [
    parse_network("a", "10.0.1.1 9.9.9.1\n1 10.0.1.2 fd01::2 c1,web\n2 10.0.1.3  c2\n"),
    parse_network("b", "10.0.2.1\n1 10.0.2.2  c1,web2\n3 10.0.2.3  c3 9.9.9.3\n"),
    parse_network("i%int", "10.0.3.1 9.9.9.4\n4 10.0.3.2  c4 9.9.9.5\n1 10.0.3.3  c1\n"),
]


def test_container_on_several_networks_sees_all_of_them() -> None:
    t = build(NETS)
    s = t.scope("10.0.1.2", "10.0.1.1")
    assert s is t.scope("10.0.2.2", "10.0.2.1") is t.scope("fd01::2", "10.0.3.1")
    assert s.view.names["c1"] == (("10.0.1.2", "10.0.2.2", "10.0.3.3"), ("fd01::2",))
    assert set(s.view.names) == {"c1", "web", "c2", "web2", "c3", "c4"}
    assert s.view.reverse["10.0.2.3"] == ("c3",)


def test_isolation_and_unknown_sources() -> None:
    t = build(NETS)
    c2 = t.scope("10.0.1.3", "10.0.2.1")  # listen address does not matter for a container
    assert set(c2.view.names) == {"c1", "web", "c2"}
    assert c2.view.names["c1"] == (("10.0.1.2",), ("fd01::2",))
    host_b = t.scope("192.0.2.9", "10.0.2.1")
    assert set(host_b.view.names) == {"c1", "web2", "c3"}


def test_upstreams_container_then_network_then_host() -> None:
    t = build(NETS)
    assert t.scope("10.0.2.3", "10.0.2.1").upstreams == ("9.9.9.3",)
    assert t.scope("10.0.1.3", "10.0.1.1").upstreams == ("9.9.9.1",)
    assert t.scope("1.2.3.4", "10.0.2.1").upstreams == ()  # -> host resolv.conf


def test_internal_networks_never_forward_nor_lend_servers() -> None:
    t = build(NETS)
    c4 = t.scope("10.0.3.2", "10.0.3.1")
    assert not c4.may_forward and c4.upstreams == ()
    assert not t.scope("1.2.3.4", "10.0.3.1").may_forward
    c1 = t.scope("10.0.1.2", "10.0.1.1")
    assert c1.may_forward and c1.upstreams == ("9.9.9.1",)


def test_scopes_are_shared() -> None:
    nets = [parse_network("big", "10.1.0.1\n" + "".join(
        f"{i} 10.1.{i // 250}.{i % 250 + 2}  n{i}\n" for i in range(1000)))]
    t = build(nets)
    assert len({id(t.by_who[w]) for w in t.by_source.values()}) == 1
    assert t.listen_ips == ("10.1.0.1",)
