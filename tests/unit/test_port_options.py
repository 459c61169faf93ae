"""`-p ...,client-port` (rootless.ports.spec): the sandbox sees the client's port as well as its
address. TCP only, not with no-client-addr; round-trips through the record and `port ls`."""

from __future__ import annotations

import pytest

from netns.errors import BurrowError
from rootless import publish
from rootless.ports.spec import CLIENT_PORT, PORT_KEY, PortSpec


def test_client_port_parses_prints_and_round_trips() -> None:
    (tcp,) = PortSpec.parse(f"8080:80/tcp,{CLIENT_PORT}")
    assert tcp.keep_client and tcp.client_port and tcp.protocol == "tcp"
    assert str(tcp) == "8080:80/tcp,client-port"
    assert PortSpec.parse(str(tcp)) == [tcp]
    assert tcp.to_json()[PORT_KEY] is True
    assert PortSpec.from_json(tcp.to_json()) == tcp
    (only,) = PortSpec.parse("8080:80/client-port")
    assert only == tcp
    (default,) = PortSpec.parse("8080:80")
    assert default.keep_client and not default.client_port
    assert PORT_KEY not in default.to_json()  # records of before read the same
    # A free host port is picked for it as for any other spec.
    (picked,) = publish.parse([f"81/tcp,{CLIENT_PORT}"], [], lambda *_: True)
    assert (picked.container_port, picked.protocol, picked.client_port) == (81, "tcp", True)


@pytest.mark.parametrize("spec", ["8080:80/udp,client-port", "8080:80/tcp,udp,client-port",
                                  "8080:80/tcp,client-port,no-client-addr"])
def test_client_port_is_refused_where_it_means_nothing(spec: str) -> None:
    with pytest.raises(BurrowError, match="client-port is for tcp ports that keep"):
        PortSpec.parse(spec)


@pytest.mark.parametrize("bad", [{PORT_KEY: "yes"}, {PORT_KEY: 1},
                                 {PORT_KEY: True, "keep_client_address": False},
                                 {PORT_KEY: True, "protocol": "udp"}])
def test_a_record_with_a_bad_client_port_is_refused(bad: dict[str, object]) -> None:
    good = PortSpec.parse("8080:80/tcp,client-port")[0].to_json()
    with pytest.raises(BurrowError, match=PORT_KEY):
        PortSpec.from_json({**good, **bad})


def test_tcp_plans_are_made_once_per_client_and_follow_what_failed() -> None:
    """Target.plans keeps a TCP client's plans (they are asked for on every connection): the
    same for the same client, remade when a set-up fails, never holding more than the cap."""
    from ipaddress import IPv4Address, IPv6Address

    from rootless.ports.clientaddr import INSIDE, VIA, Availability
    from rootless.ports.target import PLAN_CACHE, Target

    t = Target("s", "/ns", IPv4Address("10.88.0.5"), IPv6Address("fd00::5"), via="/via",
               inside=True)
    avail = Availability()
    first = t.plans("198.51.100.7", 0, True, True, avail, tcp=True)
    assert first[0].mode == INSIDE and first[0].bind == ("198.51.100.7", 0)
    again = t.plans("198.51.100.7", 0, True, True, avail, tcp=True)
    assert again == first and again is not first, "a list of its own: candidates are popped"
    assert again[0] is first[0]
    avail.fail("/ns", 4, "no policy routing", INSIDE)
    assert t.plans("198.51.100.7", 0, True, True, avail, tcp=True)[0].mode == VIA
    with_port = t.plans("198.51.100.7", 4242, True, True, avail, tcp=True)  # client-port
    assert with_port[0].bind == ("198.51.100.7", 4242)
    for i in range(2 * PLAN_CACHE):
        t.plans(f"198.51.{i // 250}.{i % 250 + 1}", 0, True, True, avail, tcp=True)
    assert len(t._cache) <= PLAN_CACHE  # noqa: SLF001 - the cap is the point
