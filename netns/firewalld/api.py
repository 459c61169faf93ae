"""firewalld's D-Bus API, typed: the calls burrow makes, each one method here.

Names follow firewalld's own (`org.fedoraproject.FirewallD1`, firewalld(1) D-Bus docs), and the
set is what Netavark uses: 1.4's trusted-zone sources, 2.x's firewalld driver (zone + policies in
the permanent config, port forwards in runtime policy settings), and the `Reloaded` signal.
Runtime calls change what runs now; `config_*` calls change the permanent config (firewalld's
--system-config dir) and take effect at the next reload.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from jeepney import MatchRule

from netns.firewalld.bus import Bus, BusError, Call, SignalQueue, open_system

SERVICE = "org.fedoraproject.FirewallD1"
PATH = "/org/fedoraproject/FirewallD1"
CONFIG_PATH = "/org/fedoraproject/FirewallD1/config"
IFACE = SERVICE
ZONE_IFACE = f"{SERVICE}.zone"
POLICY_IFACE = f"{SERVICE}.policy"
CONFIG_IFACE = f"{SERVICE}.config"
RELOADED = "Reloaded"
# firewalld's error for "already there" / "not there" (a runtime add/remove that changes nothing).
ALREADY = ("ALREADY_ENABLED", "ZONE_ALREADY_SET")
MISSING = ("NOT_ENABLED", "UNKNOWN_SOURCE")

# D-Bus signatures of the a{sv} settings keys of zones and policies (firewalld's
# IMPORT_EXPORT_STRUCTURE); an empty list needs its signature spelled, so they are all here.
SETTINGS_SIGNATURES: dict[str, str] = {
    "version": "s", "short": "s", "description": "s", "target": "s",
    "services": "as", "ports": "a(ss)", "icmp_blocks": "as", "masquerade": "b",
    "forward_ports": "a(ssss)", "rich_rules": "as", "protocols": "as", "source_ports": "a(ss)",
    "priority": "i", "ingress_zones": "as", "egress_zones": "as",
    "interfaces": "as", "sources": "as", "icmp_block_inversion": "b", "forward": "b",
    "ingress_priority": "i", "egress_priority": "i",
}  # fmt: skip

Settings = dict[str, Any]  # plain Python values (str, bool, int, lists of str or tuples)


def to_variants(settings: Mapping[str, Any]) -> dict[str, tuple[str, Any]]:
    """Settings as a{sv}: each value wrapped in its variant signature."""
    out: dict[str, tuple[str, Any]] = {}
    for key, value in settings.items():
        sig = SETTINGS_SIGNATURES.get(key)
        if sig is None:
            raise BusError(f"DBus error: firewalld setting {key!r} has no known type")
        if sig.startswith("a"):
            value = [tuple(v) if isinstance(v, list | tuple) else v for v in value]
        out[key] = (sig, value)
    return out


def from_variants(raw: Mapping[str, tuple[str, Any]]) -> Settings:
    """a{sv} as received: drop the signatures."""
    return {key: value for key, (_sig, value) in raw.items()}


_MAIN = Call(SERVICE, PATH, IFACE)
_ZONE = Call(SERVICE, PATH, ZONE_IFACE)
_POLICY = Call(SERVICE, PATH, POLICY_IFACE)
_CONFIG = Call(SERVICE, CONFIG_PATH, CONFIG_IFACE)
_PROPS = Call(SERVICE, CONFIG_PATH, "org.freedesktop.DBus.Properties")
_MAIN_PROPS = Call(SERVICE, PATH, "org.freedesktop.DBus.Properties")


def error_code(err: BusError) -> str:
    """firewalld's error code (`ZONE_ALREADY_SET`, `INVALID_ZONE`, ...): its errors all share one
    D-Bus name and put the code first in the text."""
    head = err.message.rsplit("org.fedoraproject.FirewallD1.Exception: ", 1)[-1]
    return head.split(":", 1)[0].strip()


class Firewalld:
    """firewalld on one bus. Every method is one D-Bus call (or a short, named sequence)."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    # -- presence --------------------------------------------------------------------------

    def running(self) -> bool:
        """Whether firewalld owns its name on this bus (one call to the bus daemon)."""
        return self.bus.name_has_owner(SERVICE)

    def state(self) -> str:
        """`RUNNING` once firewalld has applied its config (what `firewall-cmd --state` reads)."""
        (value,) = self.bus.call(_MAIN_PROPS, "Get", "ss", (IFACE, "state"))
        return str(value[1])

    # -- runtime ---------------------------------------------------------------------------

    def default_zone(self) -> str:
        return str(self.bus.call(_MAIN, "getDefaultZone")[0])

    def reload(self) -> None:
        """Reload the permanent config into the running one (emits `Reloaded`)."""
        self.bus.call(_MAIN, "reload")

    def zones(self) -> list[str]:
        return [str(z) for z in self.bus.call(_ZONE, "getZones")[0]]

    def sources(self, zone: str) -> list[str]:
        return [str(s) for s in self.bus.call(_ZONE, "getSources", "s", (zone,))[0]]

    def zone_of_source(self, source: str) -> str:
        """The zone `source` (an address or CIDR) is bound to; "" when none."""
        return str(self.bus.call(_ZONE, "getZoneOfSource", "s", (source,))[0])

    def add_source(self, zone: str, source: str) -> None:
        self.bus.call(_ZONE, "addSource", "ss", (zone, source))

    def change_zone_of_source(self, zone: str, source: str) -> None:
        """Bind `source` to `zone`, moving it from any other zone (add if unbound)."""
        self.bus.call(_ZONE, "changeZoneOfSource", "ss", (zone, source))

    def remove_source(self, zone: str, source: str) -> None:
        self.bus.call(_ZONE, "removeSource", "ss", (zone, source))

    def policies(self) -> list[str]:
        return [str(p) for p in self.bus.call(_POLICY, "getPolicies")[0]]

    def policy_settings(self, policy: str) -> Settings:
        return from_variants(self.bus.call(_POLICY, "getPolicySettings", "s", (policy,))[0])

    def set_policy_settings(self, policy: str, settings: Mapping[str, Any]) -> None:
        """Change the keys given (firewalld leaves the keys not mentioned as they are)."""
        self.bus.call(_POLICY, "setPolicySettings", "sa{sv}", (policy, to_variants(settings)))

    # -- permanent config ------------------------------------------------------------------

    def config_zone_names(self) -> list[str]:
        return [str(z) for z in self.bus.call(_CONFIG, "getZoneNames")[0]]

    def config_add_zone(self, zone: str, settings: Mapping[str, Any]) -> str:
        """Create a permanent zone; returns its config object path."""
        return str(self.bus.call(_CONFIG, "addZone2", "sa{sv}", (zone, to_variants(settings)))[0])

    def config_remove_zone(self, zone: str) -> None:
        path = str(self.bus.call(_CONFIG, "getZoneByName", "s", (zone,))[0])
        self.bus.call(Call(SERVICE, path, f"{CONFIG_IFACE}.zone"), "remove")

    def config_policy_names(self) -> list[str]:
        return [str(p) for p in self.bus.call(_CONFIG, "getPolicyNames")[0]]

    def config_add_policy(self, policy: str, settings: Mapping[str, Any]) -> str:
        """Create a permanent policy; returns its config object path."""
        return str(self.bus.call(_CONFIG, "addPolicy", "sa{sv}", (policy, to_variants(settings)))[0])

    def config_remove_policy(self, policy: str) -> None:
        path = str(self.bus.call(_CONFIG, "getPolicyByName", "s", (policy,))[0])
        self.bus.call(Call(SERVICE, path, f"{CONFIG_IFACE}.policy"), "remove")

    def config_property(self, name: str) -> Any:
        """A property of the config object, e.g. `DefaultZone`, `StrictForwardPorts` (newer)."""
        (value,) = self.bus.call(_PROPS, "Get", "ss", (CONFIG_IFACE, name))
        return value[1]

    def strict_forward_ports(self) -> bool:
        """firewalld >= 2.3's StrictForwardPorts=yes; False where the property does not exist."""
        try:
            return str(self.config_property("StrictForwardPorts")).lower() == "yes"
        except BusError:
            return False

    # -- signals ---------------------------------------------------------------------------

    @contextmanager
    def reloaded(self) -> Iterator[SignalQueue]:
        """Subscribe to `Reloaded` (sent after every reload, `firewall-cmd --reload` too)."""
        rule = MatchRule(type="signal", interface=IFACE, member=RELOADED, path=PATH)
        with self.bus.signals(rule) as queue:
            yield queue


@contextmanager
def connect(env: Mapping[str, str]) -> Iterator[Firewalld | None]:
    """firewalld on this environment's system bus, or None when no bus or no firewalld.

    The probe costs one stat without a bus socket and one NameHasOwner call with a bus but no
    firewalld; a BusError comes only from a bus that misbehaves.
    """
    bus = open_system(env)
    if bus is None:
        yield None
        return
    with bus:
        fw = Firewalld(bus)
        yield fw if fw.running() else None


def is_running(env: Mapping[str, str]) -> bool:
    with connect(env) as fw:
        return fw is not None


__all__ = [
    "ALREADY", "MISSING", "Firewalld", "Settings", "connect", "error_code", "is_running", "to_variants",
]
