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
