"""firewalld-reload's pure parts: which driver re-applies, and what a burst of signals means."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from jeepney import new_signal
from jeepney.low_level import Message
from jeepney.wrappers import DBusAddress

from netns.firewalld import api, reload


def _sig(member: str, body: tuple[str, ...] = ()) -> Message:
    if member == "NameOwnerChanged":
        addr = DBusAddress("/org/freedesktop/DBus", "org.freedesktop.DBus", "org.freedesktop.DBus")
        return new_signal(addr, member, "sss", body)
    return new_signal(DBusAddress(api.PATH, api.SERVICE, api.IFACE), member)


def test_driver_comes_from_the_state_then_the_fallback(tmp_path: Path) -> None:
    assert reload.state_driver(tmp_path) is None
    (tmp_path / "firewall").mkdir()
    (tmp_path / "firewall" / "firewall-driver").write_text("iptables")
    assert reload.state_driver(tmp_path) == "iptables"


def test_a_failed_reapply_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "firewall").mkdir()
    (tmp_path / "firewall" / "firewall-driver").write_text("bogus")
    logger = logging.getLogger("netns.firewalld")
    logger.addHandler(caplog.handler)
    try:
        assert reload.reload_rules(tmp_path, {"DBUS_SYSTEM_BUS_ADDRESS": ""}, None) is False
    finally:
        logger.removeHandler(caplog.handler)
    assert "failed to reload firewall rules: unknown firewall driver 'bogus'" in caplog.text


def test_last_owner_of_a_burst() -> None:
    reloaded = _sig(api.RELOADED)
    gone = _sig("NameOwnerChanged", (api.SERVICE, ":1.5", ""))
    back = _sig("NameOwnerChanged", (api.SERVICE, "", ":1.9"))
    assert reload._last_owner([reloaded]) is None
    assert reload._last_owner([reloaded, gone]) == ""
    assert reload._last_owner([gone, back, reloaded]) == ":1.9"
