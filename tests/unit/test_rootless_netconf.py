"""Pure parsing and IPAM: port specs, --network options, network configs, address choice."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netns.errors import BurrowError
from rootless import netconf
from rootless.netconf import NetworkRequest, allocate, make_network, parse_opts
from rootless.ports.spec import PortSpec, overlaps
from rootless.sandbox import Attach


@pytest.mark.parametrize("text,want", [
    ("8080:80", [PortSpec.of("", 8080, 80, 1, "tcp")]),
    ("127.0.0.1:8080:80/udp", [PortSpec.of("127.0.0.1", 8080, 80, 1, "udp")]),
    ("[::1]:8080:80", [PortSpec.of("::1", 8080, 80, 1, "tcp")]),
    ("9000-9002:80-82/tcp,udp", [PortSpec.of("", 9000, 80, 3, "tcp"),
                                 PortSpec.of("", 9000, 80, 3, "udp")]),
])
def test_port_spec_parse(text: str, want: list[PortSpec]) -> None:
    assert PortSpec.parse(text) == want
    for p in want:
        assert PortSpec.parse(str(p)) == [p]
        assert PortSpec.from_json(p.to_json()) == p


@pytest.mark.parametrize("bad,msg", [
    ("80", "expected"), ("a:80", "not a port"), ("0:80", "outside"), ("8080:70000", "outside"),
    ("90-80:80", "reversed"), ("8080-8082:80-81", "different lengths: 3 vs 2"),
    ("127.0.0.1:9000-9002:80", "different lengths: 3 vs 1"),
    ("8080:80/sctp", "protocol"), ("1.2.3:8080:80", "not an IP"), ("[::1:8080:80", "expected"),
])
def test_port_spec_rejects(bad: str, msg: str) -> None:
    with pytest.raises(BurrowError, match=msg):
        PortSpec.parse(bad)


def test_port_overlap() -> None:
    a = PortSpec.of("", 9000, 80, 3, "tcp")
    assert overlaps(a, PortSpec.of("127.0.0.1", 9002, 1, 1, "tcp"))
    assert not overlaps(a, PortSpec.of("", 9003, 1, 1, "tcp"))
    assert not overlaps(a, PortSpec.of("", 9000, 1, 1, "udp"))
    assert not overlaps(PortSpec.of("127.0.0.1", 1, 1, 1, "tcp"), PortSpec.of("::1", 1, 1, 1, "tcp"))


def test_attach_parse() -> None:
    a = Attach.parse("web:ip=10.89.0.5,ip6=fd89::5,mac=AA:bb:cc:dd:ee:ff,alias=www,alias=w")
    assert a == Attach("web", ("10.89.0.5", "fd89::5"), "aa:bb:cc:dd:ee:ff", ("www", "w"))
    for bad in ("web:ip6=10.0.0.1", "web:ip=10.0.0.1,ip=10.0.0.2", "web:mac=zz", "web:color=red",
                "web:ip", "w b", "web:interface_name=a/b"):
        with pytest.raises(BurrowError):
            Attach.parse(bad)


def test_names() -> None:
    netconf.check_name("a" * 63, "sandbox")
    with pytest.raises(BurrowError, match="limit is 63"):
        netconf.check_name("a" * 64, "sandbox")
    with pytest.raises(BurrowError, match="invalid"):
        netconf.check_name("-x", "sandbox")


def test_make_network_auto_subnets_and_mtu() -> None:
    nets: dict[str, dict[str, object]] = {}
    a = make_network(NetworkRequest("a", ipv6=True), nets, 65520)
    nets["a"] = a
    b = make_network(NetworkRequest("b"), nets, 65520)
    assert [s["subnet"] for s in a["subnets"]] == ["10.89.0.0/24", "fd89:0:1::/64"]
    assert [s["subnet"] for s in b["subnets"]] == ["10.89.1.0/24"]
    assert a["options"] == {"mtu": "65520"} and a["network_interface"] == "burrow0"
    assert b["network_interface"] == "burrow1"
    assert a["dns_enabled"] and not a["internal"] and a["ipam_options"]["driver"] == "host-local"
    with pytest.raises(BurrowError, match="already exists"):
        make_network(NetworkRequest("a"), nets, None)
    with pytest.raises(BurrowError, match="already used by network a"):
        make_network(NetworkRequest("c", subnets=("10.89.0.128/25",)), nets, None)


def test_make_network_flags() -> None:
    n = make_network(NetworkRequest("x", subnets=("10.5.0.0/16",), gateways=("10.5.0.254",),
                                    ip_ranges=("10.5.3.0/24",), dns=("9.9.9.9",),
                                    options=parse_opts(["mtu=1400,isolate=true"])), {}, 65520)
    assert n["subnets"] == [{"subnet": "10.5.0.0/16", "gateway": "10.5.0.254",
                             "lease_range": {"start_ip": "10.5.3.1", "end_ip": "10.5.3.254"}}]
    assert n["options"] == {"mtu": "1400", "isolate": "true"}
    assert n["network_dns_servers"] == ["9.9.9.9"]
    for bad in (["mtu=big"], ["color=red"], ["isolate=maybe"], ["mtu=10"], ["mtu=70000"]):
        with pytest.raises(BurrowError):
            parse_opts(bad)
    assert parse_opts(["mtu=68"]) == (("mtu", "68"),)  # the edges are fine
    assert parse_opts(["mtu=65535"]) == (("mtu", "65535"),)
    with pytest.raises(BurrowError, match="needs real root"):
        make_network(NetworkRequest("m", driver="macvlan"), {}, None)


def test_macvlan_network_rootful() -> None:
    req = NetworkRequest("lan", subnets=("192.168.7.0/24",), ip_ranges=("192.168.7.200/29",),
                         driver="macvlan", options=parse_opts(["parent=eth1,mode=private"]))
    n = make_network(req, {}, 65520, rootless=False)
    assert (n["driver"], n["network_interface"], n["dns_enabled"]) == ("macvlan", "eth1", False)
    assert n["options"] == {"mode": "private"}  # no connector MTU, parent is the interface
    assert n["subnets"][0]["lease_range"] == {"start_ip": "192.168.7.201",
                                              "end_ip": "192.168.7.206"}
    # Without a parent the engine takes the default route's interface, as netavark does.
    assert make_network(NetworkRequest("d", subnets=("10.9.0.0/24",), driver="macvlan"), {},
                        None, rootless=False)["network_interface"] == ""
    for bad, match in [
        (NetworkRequest("a", driver="macvlan"), "needs --subnet"),
        (NetworkRequest("b", subnets=("10.9.0.0/24",), driver="macvlan", internal=True),
         "bridge networks only"),
        (NetworkRequest("c", subnets=("10.9.0.0/24",), driver="macvlan",
                        options=parse_opts(["isolate=true"])), "does not apply to driver macvlan"),
        (NetworkRequest("e", options=parse_opts(["parent=eth0"])), "does not apply to driver bridge"),
        (NetworkRequest("f", driver="ipvlan"), "unknown driver"),
    ]:
        with pytest.raises(BurrowError, match=match):
            make_network(bad, {}, None, rootless=False)
    with pytest.raises(BurrowError, match="mode=fast"):
        parse_opts(["mode=fast"])


def test_allocate() -> None:
    net = make_network(NetworkRequest("n", subnets=("10.7.0.0/29", "fd07::/64")), {}, None)
    assert allocate(net, set(), []) == ["10.7.0.2", "fd07::2"]
    assert allocate(net, {"10.7.0.2", "fd07::2"}, []) == ["10.7.0.3", "fd07::3"]
    assert allocate(net, set(), ["10.7.0.6"]) == ["10.7.0.6", "fd07::2"]
    with pytest.raises(BurrowError, match="already in use"):
        allocate(net, {"10.7.0.6"}, ["10.7.0.6"])
    with pytest.raises(BurrowError, match="not in network"):
        allocate(net, set(), ["10.8.0.6"])
    with pytest.raises(BurrowError, match="no free address"):
        allocate(net, {f"10.7.0.{i}" for i in range(2, 7)}, [])


_SPEC_CHARS = st.sampled_from(list("0123456789:-/[].,abcdefx ") + ["tcp", "udp", "::", "\n", "../"])


_PORT = st.one_of(st.integers(0, 70000), st.sampled_from([1, 65535, 65536]))
_RANGE = st.one_of(_PORT.map(str), st.tuples(_PORT, _PORT).map(lambda t: f"{t[0]}-{t[1]}"))
_SPEC = st.tuples(
    st.sampled_from(["", "127.0.0.1:", "[::1]:", "[fd00::5]:", "0.0.0.0:", "1.2.3:", "[::1"]),
    _RANGE, _RANGE, st.sampled_from(["", "/tcp", "/udp", "/tcp,udp", "/sctp", "/"]),
).map(lambda t: f"{t[0]}{t[1]}:{t[2]}{t[3]}")


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=40), st.lists(_SPEC_CHARS, max_size=14).map("".join), _SPEC))
def test_port_spec_parse_is_total(text: str) -> None:
    """Any -p text parses into checked mappings that round-trip, or is refused with a
    BurrowError: never another exception, never a port outside 1-65535."""
    try:
        specs = PortSpec.parse(text)
    except BurrowError:
        return
    for p in specs:
        assert p.protocol in ("tcp", "udp")
        assert 1 <= p.host_port <= p.host_port + p.range - 1 <= 65535
        assert 1 <= p.container_port <= p.container_port + p.range - 1 <= 65535
        assert PortSpec.parse(str(p)) == [p]
