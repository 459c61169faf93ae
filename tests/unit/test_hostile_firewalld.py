"""Any local user may emit a signal with firewalld's path, interface and member on the system
bus. firewalld-reload (root) re-applied every firewall rule on each one, so a user could keep
the rules churning; only the `Reloaded` signals firewalld's own connection sends count now."""

from __future__ import annotations

from jeepney import HeaderFields, new_signal
from jeepney.low_level import Message
from jeepney.wrappers import DBusAddress

from netns.firewalld import api, reload


def _from(sender: str, member: str = api.RELOADED, body: tuple[str, ...] = ()) -> Message:
    if member == "NameOwnerChanged":
        addr = DBusAddress("/org/freedesktop/DBus", "org.freedesktop.DBus", "org.freedesktop.DBus")
        msg = new_signal(addr, member, "sss", body)
    else:
        msg = new_signal(DBusAddress(api.PATH, api.SERVICE, api.IFACE), member)
    msg.header.fields[HeaderFields.sender] = sender
    return msg


def test_a_reloaded_signal_from_another_connection_is_dropped() -> None:
    forged, real = _from(":1.66"), _from(":1.5")
    assert reload.genuine([forged], ":1.5") == ([], ":1.5")
    assert reload.genuine([forged, real], ":1.5") == ([real], ":1.5")
    assert reload.genuine([real], "") == ([], "")  # firewalld is not running: nobody's is


def test_the_owner_follows_name_owner_changed_within_a_batch() -> None:
    gone = _from("org.freedesktop.DBus", "NameOwnerChanged", (api.SERVICE, ":1.5", ""))
    back = _from("org.freedesktop.DBus", "NameOwnerChanged", (api.SERVICE, "", ":1.9"))
    old, new = _from(":1.5"), _from(":1.9")
    out, owner = reload.genuine([gone, old, back, new], ":1.5")
    assert out == [gone, back, new] and owner == ":1.9"
