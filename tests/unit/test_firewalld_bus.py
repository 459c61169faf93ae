"""The D-Bus client without a bus: where there is none, finding out costs no wait and no error."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from netns.firewalld import api, bus


def test_address_from_env_or_the_standard_socket() -> None:
    assert bus.system_address({}) == "unix:path=/run/dbus/system_bus_socket"
    assert bus.system_address({"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/x/y"}) == "unix:path=/x/y"
    # Empty disables it, as for Netavark (its tests export DBUS_SYSTEM_BUS_ADDRESS=).
    assert bus.system_address({"DBUS_SYSTEM_BUS_ADDRESS": ""}) is None


def test_disabled_or_absent_bus_is_none(tmp_path: Path) -> None:
    assert bus.open_system({"DBUS_SYSTEM_BUS_ADDRESS": ""}) is None
    assert bus.open_system({"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path}/nope"}) is None
    assert api.is_running({"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path}/nope"}) is False


def test_socket_nobody_listens_on_is_none(tmp_path: Path) -> None:
    path = tmp_path / "dead.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))  # bound, never listening: connect is refused at once (a stopped daemon)
    try:
        assert bus.open_system({"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={path}"}) is None
    finally:
        s.close()


def test_silent_peer_is_an_error_with_context_not_a_hang(tmp_path: Path) -> None:
    path = tmp_path / "mute.sock"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen(1)
    held: list[socket.socket] = []
    t = threading.Thread(target=lambda: held.append(srv.accept()[0]), daemon=True)
    t.start()
    try:
        with pytest.raises(bus.BusError) as err:
            bus.open_system({"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={path}"})
        assert str(err.value).startswith(f"DBus error: connect to unix:path={path}")
    finally:
        srv.close()
        for c in held:
            c.close()


def test_unusable_address_is_an_error() -> None:
    with pytest.raises(bus.BusError, match="unusable bus address .tcp:host=x,port=1.: burrow speaks unix sockets only"):
        bus.open_system({"DBUS_SYSTEM_BUS_ADDRESS": "tcp:host=x,port=1"})


def test_settings_carry_their_signatures() -> None:
    v = api.to_variants({"rich_rules": [], "forward_ports": [["80", "tcp", "8080", "10.0.0.2"]],
                         "masquerade": True, "priority": -10, "ingress_zones": ["ANY"]})
    assert v == {"rich_rules": ("as", []), "forward_ports": ("a(ssss)", [("80", "tcp", "8080", "10.0.0.2")]),
                 "masquerade": ("b", True), "priority": ("i", -10), "ingress_zones": ("as", ["ANY"])}
    with pytest.raises(bus.BusError, match="'bogus' has no known type"):
        api.to_variants({"bogus": 1})


def test_error_code_is_firewalld_s() -> None:
    e = bus.BusError("DBus error: org.fedoraproject.FirewallD1.zone.addSource on org.fedoraproject.FirewallD1: "
                     "org.fedoraproject.FirewallD1.Exception: ZONE_ALREADY_SET: '10.0.0.0/24' already bound")
    assert api.error_code(e) == "ZONE_ALREADY_SET"
    assert api.error_code(e.wrap("outer")) == "ZONE_ALREADY_SET"


def test_socket_path_parses_dbus_addresses() -> None:
    from netns.firewalld.address import socket_path

    assert socket_path("unix:path=/run/dbus/system_bus_socket") == "/run/dbus/system_bus_socket"
    assert socket_path("unix:path=/tmp/a%20b,guid=00ff") == "/tmp/a b"
    assert socket_path("tcp:host=h,port=1;unix:abstract=/x") == "\0/x"
    assert socket_path("tcp:host=h,port=1") is None
