"""The forwarder's pure parts: typed control messages, port specs on schema.PortMapping, and
the per-client accounting and caps that bound what a peer can make it hold."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netns.errors import BurrowError
from netns.schema import PortMapping
from rootless.ports import clientaddr, messages
from rootless.ports.budget import Caps, Guard, Tally, client_of
from rootless.ports.spec import PortSpec
from rootless.ports.target import Target

ADD = {"op": "add", "sandbox": "web", "netns": "/run/user/1/burrow/netns/web",
       "ip4": "10.89.0.2", "ip6": "fd89::2",
       "ports": [{"host_ip": "", "container_port": 80, "host_port": 8080, "range": 2,
                  "protocol": "tcp"}]}


def test_add_parses_into_typed_values_and_round_trips() -> None:
    req = messages.parse_request(ADD)
    assert isinstance(req, messages.Add)
    assert req.ip4 == ipaddress.IPv4Address("10.89.0.2")
    assert req.ip6 == ipaddress.IPv6Address("fd89::2")
    assert req.ports[0].mapping == PortMapping("", 80, 8080, 2, "tcp")
    assert req.ports[0].host is None and req.ports[0].pairs() == [(8080, 80), (8081, 81)]
    assert messages.parse_request(req.to_json()) == req
    line = json.dumps(req.to_json()).encode()
    assert messages.request_from_line(line) == req


@pytest.mark.parametrize("change,msg", [
    ({"op": "frobnicate"}, "unknown op"),
    ({"sandbox": "../x"}, "invalid sandbox"),
    ({"sandbox": "a/b"}, "invalid sandbox"),
    ({"sandbox": ""}, "invalid sandbox"),
    ({"netns": "relative/path"}, "invalid netns"),
    ({"netns": "/run/../etc/passwd"}, "invalid netns"),
    ({"netns": "/run/x/.."}, "invalid netns"),
    ({"netns": "/run/\0x"}, "invalid netns"),
    ({"ip4": "fd89::2"}, "IPv4"),
    ({"ip6": "10.0.0.1"}, "IPv6"),
    ({"ip4": 7}, "IPv4"),
    ({"ports": "80:80"}, "list"),
    ({"ports": [{"host_port": 0, "container_port": 80, "host_ip": "", "range": 1,
                 "protocol": "tcp"}]}, "1-65535"),
    ({"ports": [{"host_port": 65535, "container_port": 80, "host_ip": "", "range": 2,
                 "protocol": "tcp"}]}, "past 65535"),
    ({"ports": [{"host_port": 80, "container_port": 80, "host_ip": "", "range": 1,
                 "protocol": "sctp"}]}, "tcp or udp"),
    ({"ports": [{"host_port": 80, "container_port": 80, "host_ip": "1.2.3", "range": 1,
                 "protocol": "tcp"}]}, "not an IPv4 or IPv6"),
    ({"ports": [{"host_port": True, "container_port": 80, "host_ip": "", "range": 1,
                 "protocol": "tcp"}]}, "integer"),
])
def test_bad_add_is_rejected_with_the_reason(change: dict[str, Any], msg: str) -> None:
    with pytest.raises(BurrowError, match=msg):
        messages.parse_request({**ADD, **change})


def test_retarget_round_trips_and_is_checked_like_add() -> None:
    """`network connect`/`disconnect` re-point a sandbox's ports: add's fields without ports,
    validated the same way where they enter."""
    obj = {**{k: v for k, v in ADD.items() if k != "ports"}, "op": "retarget",
           "via": "/proc/1/ns/net", "onlink": ["10.89.0.0/24"]}
    req = messages.parse_request(obj)
    assert isinstance(req, messages.Retarget)
    assert req.onlink == (ipaddress.IPv4Network("10.89.0.0/24"),) and req.via == "/proc/1/ns/net"
    assert req.to_json() == obj and messages.parse_request(req.to_json()) == req
    for change, msg in (({"sandbox": "../x"}, "invalid sandbox"),
                        ({"netns": "/run/../etc"}, "invalid netns"), ({"ip4": "fd89::2"}, "IPv4")):
        with pytest.raises(BurrowError, match=msg):
            messages.parse_request({**obj, **change})


@pytest.mark.parametrize("line", [b"", b"{", b"[]", b"null", b'"ping"', b"[" * 100000,
                                  b'{"op": null}', b'{"op": ["ping"]}', b"\xff\xfe"])
def test_malformed_lines_are_burrow_errors(line: bytes) -> None:
    with pytest.raises(BurrowError):
        messages.request_from_line(line)


JSONS = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                     lambda kids: st.lists(kids, max_size=4)
                     | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=12)
FIELDS = st.fixed_dictionaries({}, optional={
    "op": st.sampled_from(["add", "remove", "list", "ping", "shutdown", "x"]) | JSONS,
    "sandbox": st.text(max_size=20) | JSONS, "netns": st.text(max_size=30) | JSONS,
    "ip4": st.text(max_size=20) | JSONS, "ip6": st.text(max_size=20) | JSONS,
    "ports": st.lists(st.fixed_dictionaries({}, optional={
        k: st.integers(-5, 70000) | JSONS for k in
        ("host_ip", "host_port", "container_port", "range", "protocol")}), max_size=3) | JSONS,
})


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | FIELDS.map(lambda d: json.dumps(d).encode()))
def test_any_line_parses_or_fails_as_a_burrow_error(line: bytes) -> None:
    try:
        req = messages.request_from_line(line)
    except BurrowError:
        return
    assert messages.parse_request(req.to_json()) == req  # what parses is well-formed


def test_port_spec_is_built_on_the_engines_port_mapping() -> None:
    (p,) = PortSpec.parse("[::1]:8080-8081:80-81/udp")
    assert p.mapping == PortMapping("::1", 80, 8080, 2, "udp")
    assert p.host == ipaddress.IPv6Address("::1")
    assert PortSpec.of("::0001", 1, 1).host_ip == "::1"  # one spelling of each address
    with pytest.raises(BurrowError):
        PortSpec.from_json({"host_ip": "", "container_port": 80, "host_port": 8080,
                            "range": 1, "protocol": "tcp,udp"})


def test_dial_family_follows_the_client() -> None:
    t = Target("s", "/n", ipaddress.IPv4Address("10.0.0.2"), ipaddress.IPv6Address("fd::2"))
    assert t.candidates(True) == [(4, "10.0.0.2"), (6, "fd::2")]
    assert t.candidates(False) == [(6, "fd::2"), (4, "10.0.0.2")]
    v6only = Target("s", "/n", None, ipaddress.IPv6Address("fd::2"))
    assert v6only.candidates(True) == [(6, "fd::2")]


@pytest.mark.parametrize("host,key,v4", [
    ("127.0.0.1", "127.0.0.1", True),
    ("::ffff:127.0.0.1", "127.0.0.1", True),  # a v4 client on a dual-stack socket
    ("::1", "0" * 16, False),
    ("2001:db8:1:2::5", "20010db800010002", False),
    ("2001:db8:1:2:ffff::9", "20010db800010002", False),  # the same /64: one client
    ("fe80::1%eth0", "fe80000000000000", False),
])
def test_client_identity(host: str, key: str, v4: bool) -> None:
    assert client_of(host) == (key, v4)


def test_caps_follow_the_fd_limit_and_leave_room_for_others() -> None:
    small, big = Caps.for_fds(1024, 10), Caps.for_fds(20000, 10)
    assert small.tcp_total * 6 + small.udp_total <= 1024 - 10
    assert big.tcp_total > small.tcp_total and big.dial_total <= 1024
    tcp_only, udp_only = Caps.for_fds(1024, 10, True, False), Caps.for_fds(1024, 10, False, True)
    assert tcp_only.tcp_total > small.tcp_total and udp_only.udp_total > small.udp_total
    assert tcp_only.tcp_total * 6 <= 1024 - 10 and udp_only.udp_total <= 1024 - 10
    for caps in (small, big, tcp_only, udp_only, Caps.for_fds(10, 100)):
        assert 1 <= caps.tcp_per_client <= caps.tcp_total
        assert 1 <= caps.udp_per_client <= caps.udp_total
        assert caps.udp_per_client < caps.udp_total or caps.udp_total == 1


def test_guard_refuses_per_client_then_in_total_and_counts() -> None:
    guard = Guard(1024, lambda: 0)
    caps = guard.caps()
    conns, dials = Tally(), Tally()
    admitted = 0
    while guard.admit_tcp(conns, Tally(), "a"):
        conns.add("a")
        admitted += 1
    assert admitted == caps.tcp_per_client and guard.shed.tcp_refused_per_client == 1
    while guard.admit_tcp(conns, dials, "b"):
        conns.add("b")
    assert conns.total == caps.tcp_total and guard.shed.tcp_refused_total == 1
    assert guard.shed.for_want_of_fds == 1
    conns.drop("a")
    assert guard.admit_tcp(conns, dials, "c")  # room again once one closes


def test_dialer_messages_round_trip_and_reject_bad_ones() -> None:
    dial = messages.Dial(7, "/n/s", 6, "udp", 32)
    assert messages.parse_dialer_request(json.dumps(dial.to_json()).encode()) == dial
    forget = messages.Forget("/n/s")
    assert messages.parse_dialer_request(json.dumps(forget.to_json()).encode()) == forget
    reply = messages.DialReply(7, None)
    assert messages.parse_dialer_reply(json.dumps(reply.to_json()).encode()) == reply
    for bad in ({**dial.to_json(), "n": 10**6}, {**dial.to_json(), "family": 5},
                {**dial.to_json(), "netns": "../x"}, {"op": "forget", "netns": "x/../y"}):
        with pytest.raises(BurrowError):
            messages.parse_dialer_request(json.dumps(bad).encode())


# -- keeping the client's address (rootless.ports.clientaddr) ----------------------------------
def test_add_via_and_the_per_port_off_switch_round_trip() -> None:
    req = messages.parse_request({**ADD, "via": "/proc/1/ns/net", "ports": [
        {**ADD["ports"][0], "keep_client_address": False}]})
    assert isinstance(req, messages.Add)
    assert req.via == "/proc/1/ns/net" and not req.ports[0].keep_client
    assert messages.parse_request(req.to_json()) == req
    plain = messages.parse_request(ADD)
    assert isinstance(plain, messages.Add) and plain.via is None and plain.ports[0].keep_client
    assert "via" not in plain.to_json()  # an old client's request reads the same as before
    assert "keep_client_address" not in plain.ports[0].to_json()
    for bad, msg in (({"via": "proc/1"}, "invalid netns"), ({"via": "/a/../b"}, "invalid netns"),
                     ({"ports": [{**ADD["ports"][0], "keep_client_address": "no"}]},
                      "keep_client_address")):
        with pytest.raises(BurrowError, match=msg):
            messages.parse_request({**ADD, **bad})


def test_no_client_addr_in_the_cli_syntax() -> None:
    tcp, udp = PortSpec.parse("8080:80/tcp,udp,no-client-addr")
    assert (tcp.protocol, udp.protocol) == ("tcp", "udp")
    assert not tcp.keep_client and not udp.keep_client
    assert str(tcp) == "8080:80/tcp,no-client-addr"
    assert PortSpec.parse(str(tcp)) == [tcp]
    (only,) = PortSpec.parse("8080:80/no-client-addr")
    assert only.protocol == "tcp" and not only.keep_client
    assert all(p.keep_client for p in PortSpec.parse("8080:80/tcp,udp"))
    assert PortSpec.from_json(tcp.to_json()) == tcp
    with pytest.raises(BurrowError, match="protocol"):
        PortSpec.parse("8080:80/tcp,no-client-adr")


def test_transparent_dial_messages_round_trip() -> None:
    dial = messages.Dial(3, "/proc/1/ns/net", 4, "tcp", 8, transparent=True)
    assert messages.parse_dialer_request(json.dumps(dial.to_json()).encode()) == dial
    assert "transparent" not in messages.Dial(3, "/n", 4, "tcp", 8).to_json()
    reply = messages.DialReply(3, "nft: Operation not supported", unsupported=True)
    assert messages.parse_dialer_reply(json.dumps(reply.to_json()).encode()) == reply
    with pytest.raises(BurrowError, match="transparent"):
        messages.parse_dialer_request(json.dumps({**dial.to_json(), "transparent": 1}).encode())
    inside = messages.Dial(4, "/n/web", 6, "tcp", 8, transparent=True, inside=True)
    assert messages.parse_dialer_request(json.dumps(inside.to_json()).encode()) == inside
    assert "inside" not in dial.to_json()
    with pytest.raises(BurrowError, match="inside"):
        messages.parse_dialer_request(json.dumps({**inside.to_json(), "inside": "yes"}).encode())
    with pytest.raises(BurrowError, match="needs 'transparent'"):
        messages.parse_dialer_request(json.dumps(
            {**messages.Dial(4, "/n", 4, "tcp", 1).to_json(), "inside": True}).encode())


@pytest.mark.parametrize("host,seen", [
    ("::ffff:198.51.100.7", ("198.51.100.7", 4)), ("198.51.100.7", ("198.51.100.7", 4)),
    ("2001:db8::7", ("2001:db8::7", 6)), ("::ffff:127.0.0.1", None), ("127.0.0.9", None),
    ("::1", None), ("fe80::1%eth0", None), ("fe80::1", None), ("169.254.1.1", None),
])
def test_which_client_addresses_are_kept(host: str, seen: tuple[str, int] | None) -> None:
    assert clientaddr.client_ip(host) == seen


def test_dial_plans_keep_the_address_in_the_clients_family_only() -> None:
    t = Target("web", "/n/web", ipaddress.IPv4Address("10.89.0.2"),
               ipaddress.IPv6Address("fd89::2"), via="/proc/1/ns/net")
    avail = clientaddr.Availability()
    P, VIA = clientaddr.Plan, clientaddr.VIA
    assert t.plans("::ffff:198.51.100.7", 5000, True, True, avail) == [
        P("/proc/1/ns/net", 4, VIA, "10.89.0.2", ("198.51.100.7", 5000),
          P("/n/web", 4, "", "10.89.0.2")),
        P("/n/web", 6, "", "fd89::2")]  # the other family: inside the sandbox, as before
    assert t.plans("::1", 5000, False, True, avail) == [  # loopback: as before
        P("/n/web", 6, "", "fd89::2"), P("/n/web", 4, "", "10.89.0.2")]
    old = [P("/n/web", 4, "", "10.89.0.2"), P("/n/web", 6, "", "fd89::2")]
    assert t.plans("::ffff:198.51.100.7", 5000, True, False, avail) == old  # switched off
    assert Target("web", "/n/web", t.ip4, t.ip6).plans("1.2.3.4", 1, True, True, avail) == old
    avail.fail("/proc/1/ns/net", 4, "nft: no")  # set-up failed for v4: v4 dials as before
    assert t.plans("::ffff:198.51.100.7", 5000, True, True, avail)[0] == old[0]
    assert avail.to_json()["unavailable"] == [
        {"netns": "/proc/1/ns/net", "family": 4, "reason": "nft: no"}]


def test_tcp_plans_of_an_inside_target_dial_in_the_sandbox_then_via_then_plain() -> None:
    """burrow's own sandboxes: TCP binds the client's address inside the sandbox (no bridge
    crossing), falling back to a dial from `via`, then to the old dial; UDP always via."""
    t = Target("web", "/n/web", ipaddress.IPv4Address("10.89.0.2"),
               ipaddress.IPv6Address("fd89::2"), via="/proc/1/ns/net", inside=True)
    avail = clientaddr.Availability()
    P, VIA, INSIDE = clientaddr.Plan, clientaddr.VIA, clientaddr.INSIDE
    plain6, plain4 = P("/n/web", 6, "", "fd89::2"), P("/n/web", 4, "", "10.89.0.2")
    bind = ("2001:db8::7", 5000)
    via = P("/proc/1/ns/net", 6, VIA, "fd89::2", bind, plain6)
    assert t.plans("2001:db8::7", 5000, False, True, avail, tcp=True) == [
        P("/n/web", 6, INSIDE, "fd89::2", bind, via), plain4]
    assert t.plans("2001:db8::7", 5000, False, True, avail) == [via, plain4]  # UDP
    avail.fail("/n/web", 6, "ip rule: no", INSIDE)  # the sandbox refused: via, no note
    assert t.plans("2001:db8::7", 5000, False, True, avail, tcp=True) == [via, plain4]
    assert avail.to_json()["unavailable"] == []
    assert avail.to_json()["inside_unavailable"] == [
        {"netns": "/n/web", "family": 6, "reason": "ip rule: no"}]
    avail.fail("/proc/1/ns/net", 6, "nft: no")
    assert t.plans("2001:db8::7", 5000, False, True, avail, tcp=True) == [plain6, plain4]
    avail.forget("/n/web")  # a new sandbox at that path is tried afresh
    assert t.plans("2001:db8::7", 5000, False, True, avail, tcp=True)[0].mode == INSIDE
