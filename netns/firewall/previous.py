"""Teardown by the firewall driver that set a container up, when it is not the one in effect now.

The driver can change between a container's setup and its teardown: `NETAVARK_FW` changed, or
`burrow podman enable` re-run after an update now pins iptables for netavark < 1.9 where an
older burrow used nftables. Netavark itself tears down with the driver in effect only (2.x
`src/commands/teardown.rs`: `firewall::get_supported_firewall_driver(firewall_driver)`; the
`firewall/firewall-driver` file is read by `firewall-reload` alone), so the first driver's
rules of every container that lived across the change stay for good, a DNAT for a host port
among them (it can win over the next container's).

burrow's per-driver ledgers (`firewall/.burrow-ledger.json`) say which networks each driver
has rules for. A teardown also runs the teardown of each other driver whose ledger knows one
of the request's networks, for what that driver may hold: the container's port rules (only
a container with port mappings has rules of its own) and the rules of the networks whose
bridge went. Each driver's teardown is idempotent (rules it never made are not found), and a
network leaves a ledger with its last container, so this lasts only while a network has
containers from before the change. firewalld keeps its rules behind D-Bus with no such
ledger: not covered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from netns.errors import BurrowError
from netns.firewall.iptables import Ledger
from netns.firewall.nftables import NftLedger
from netns.firewall.state import StateStore
from netns.firewall.types import Firewall, NetworkFw, PortFw
from netns.firewalld.trusted import TrustedZone

log = logging.getLogger("netns.firewall")

DRIVERS = ("nftables", "iptables")  # the ones whose ledger names their networks


def known_networks(store: StateStore, driver: str) -> set[str]:
    """The networks (ids for nftables, iptables chain hashes) `driver`'s ledger has rules of."""
    raw = store.ledger(driver)
    if driver == "nftables":
        return set(NftLedger.from_json(raw).nets)
    if not isinstance(raw, dict):
        return set()
    return {h for fam in ("v4", "v6") for h in Ledger.from_json(raw.get(fam)).nets}


def _key(driver: str, net: NetworkFw) -> str:
    return net.id if driver == "nftables" else net.hash


def leftovers(store: StateStore, current: str, networks: Sequence[NetworkFw],
              ports: Sequence[PortFw]) -> list[tuple[str, list[NetworkFw], list[PortFw]]]:
    """(driver, networks, ports) each other driver may still have rules for (pure but for
    the ledger read)."""
    out = []
    for driver in DRIVERS:
        if driver == current:
            continue
        known = known_networks(store, driver)
        nets = [n for n in networks if _key(driver, n) in known]
        mapped = [p for p in ports if p.mappings and _key(driver, p.network) in known]
        if nets or mapped:
            out.append((driver, nets, mapped))
    return out


def teardown(current: Firewall, config_dir: Path, env: Mapping[str, str], container_id: str,
             networks: Sequence[NetworkFw], ports: Sequence[PortFw],
             select: Callable[[str, Path, Mapping[str, str]], Firewall]) -> list[BurrowError]:
    """Remove these networks' and ports' rules from every other driver that has them; the
    errors, each with its driver named (nothing raised: the teardown goes on)."""
    errors: list[BurrowError] = []
    for driver, nets, mapped in leftovers(StateStore(config_dir), current.name, networks, ports):
        names = sorted({n.name for n in (*nets, *(p.network for p in mapped))})
        log.warning("container %s: network %s still has %s rules (from before the switch to "
                    "%s): removing the container's there too", container_id[:12],
                    ",".join(names), driver, current.name)
        try:
            other = select(driver, config_dir, env)
            if isinstance(other, TrustedZone) and isinstance(current, TrustedZone):
                other = other.inner  # the current one's teardown unbound the subnets already
            other.teardown(nets, mapped)
        except BurrowError as exc:
            errors.append(exc.wrap(f"remove the rules left in {driver}"))
    return errors
