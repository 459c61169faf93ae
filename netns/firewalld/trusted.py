"""Netavark 1.4's firewalld glue for the iptables and nftables backends.

When firewalld runs, the rules stay in iptables/nftables and each container subnet is bound to
firewalld's `trusted` zone, so firewalld's own rules (its `filter_FORWARD` rejects what no zone
accepts) don't drop container traffic. As in Netavark (1.4 `iptables.rs`, 2.x `nft.rs`):
- a network's setup (every container's, idempotently) adds its subnets after the rules;
- a network's complete teardown (bridge deleted) removes them after the rules;
- a reload (`firewall-reload`, `firewalld-reload`) adds every persisted network's subnets again.
firewalld failures never fail the request: Netavark logs them and goes on, and so does this.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

from netns.firewall.state import StateStore
from netns.firewall.types import Firewall, NetworkFw, PortFw
from netns.firewalld import address

log = logging.getLogger("netns.firewalld")

ZONE = "trusted"


class TrustedZone:
    """A backend plus the trusted-zone binding of its networks' subnets."""

    def __init__(self, inner: Firewall, store: StateStore, env: Mapping[str, str]) -> None:
        self.inner = inner
        self.name = inner.name
        self._store = store
        self._env = env

    def setup(self, networks: Sequence[NetworkFw], ports: Sequence[PortFw], *,
              fresh: Iterable[str] = ()) -> None:
        self.inner.setup(networks, ports, fresh=fresh)
        bind(self._env, _subnets(networks))

    def teardown(self, networks: Sequence[NetworkFw], ports: Sequence[PortFw]) -> None:
        self.inner.teardown(networks, ports)
        unbind(self._env, _subnets(networks))

    def reload(self) -> None:
        self.inner.reload()
        bind(self._env, _subnets(self._store.load().ordered_networks()))


def _subnets(networks: Iterable[NetworkFw]) -> list[str]:
    return list(dict.fromkeys(str(s) for n in networks for s in n.subnets))


def bind(env: Mapping[str, str], subnets: Sequence[str]) -> None:
    """Bind each subnet to the trusted zone, if firewalld runs (moving it from another zone)."""
    if not subnets or not address.maybe_present(env):
        return  # no bus socket: one stat, and the D-Bus library is not even imported
    from netns.firewalld import api
    from netns.firewalld.bus import BusError

    try:
        with api.connect(env) as fw:
            if fw is None:
                return
            for subnet in subnets:
                try:
                    # Netavark's add_source_subnets_to_zone: getZoneOfSource, then
                    # changeZoneOfSource (which also takes it from any other zone).
                    if fw.zone_of_source(subnet) != ZONE:
                        fw.change_zone_of_source(ZONE, subnet)
                        log.debug("firewalld: added %s to zone %s", subnet, ZONE)
                except BusError as exc:
                    log.warning("Error adding subnet %s to firewalld trusted zone: %s", subnet, exc)
    except BusError as exc:
        log.warning("firewalld: %s", exc)


def unbind(env: Mapping[str, str], subnets: Sequence[str]) -> None:
    """Unbind each subnet from the trusted zone, if firewalld runs."""
    if not subnets or not address.maybe_present(env):
        return
    from netns.firewalld import api
    from netns.firewalld.bus import BusError

    try:
        with api.connect(env) as fw:
            if fw is None:
                return
            for subnet in subnets:
                try:
                    fw.remove_source(ZONE, subnet)
                    log.debug("firewalld: removed %s from zone %s", subnet, ZONE)
                except BusError as exc:
                    if api.error_code(exc) not in api.MISSING:  # already gone: nothing to undo
                        log.warning("Error removing subnet %s from firewalld trusted zone: %s",
                                    subnet, exc)
    except BusError as exc:
        log.warning("firewalld: %s", exc)
