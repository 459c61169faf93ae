"""The state-driven transaction every real backend shares.

Each call, under the state lock: load the persisted intent, change it, validate and render the
COMPLETE desired ruleset, persist it, and let the backend apply it in one atomic exec. If the
apply fails, the state files go back to what they were, so state never claims rules the kernel
refused. The firewall is thus a pure function of state: `reload()` is the same apply without a
change, which also repairs a flushed firewall.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Protocol

from netns.errors import BurrowError, context
from netns.firewall import rules
from netns.firewall.state import Snapshot, StateStore, port_key
from netns.firewall.types import NetworkFw, PortFw


class Backend(Protocol):
    name: str

    def apply(
        self, old: rules.Ruleset | None, new: rules.Ruleset, installed: frozenset[str]
    ) -> frozenset[str]:
        """Make the kernel match `new` (`old` was the last applied, None: unknown, rebuild all).

        Returns the new bookkeeping."""


def ruleset_of(snap: Snapshot) -> rules.Ruleset:
    return rules.build(snap.ordered_networks(), snap.ordered_ports())


class StatefulFirewall:
    """A `Firewall` over one backend and one state directory."""

    def __init__(self, backend: Backend, store: StateStore) -> None:
        self.backend = backend
        self.store = store
        self.name = backend.name

    def setup(self, networks: Sequence[NetworkFw], ports: Sequence[PortFw], *,
              fresh: Iterable[str] = ()) -> None:
        def add(s: Snapshot) -> Snapshot:
            nets = dict(s.networks) | {n.id: n for n in networks}
            return replace(s, networks=nets, ports=dict(s.ports) | {port_key(p): p for p in ports})

        self._transact(add)

    def teardown(self, networks: Sequence[NetworkFw], ports: Sequence[PortFw]) -> None:
        gone_nets = {n.id for n in networks}
        gone_ports = {port_key(p) for p in ports}

        def remove(s: Snapshot) -> Snapshot:
            # A deleted network takes every port forward into it along.
            kept = {k: p for k, p in s.ports.items()
                    if k not in gone_ports and p.network.id not in gone_nets}
            nets = {k: n for k, n in s.networks.items() if k not in gone_nets}
            return replace(s, networks=nets, ports=kept)

        self._transact(remove)

    def reload(self) -> None:
        # Reload exists to repair what someone flushed: forget what was applied before.
        self._transact(lambda s: s, assume_empty=True)

    def _transact(self, change: Callable[[Snapshot], Snapshot], *, assume_empty: bool = False) -> None:
        where = f"firewall ({self.name})"
        with self.store.locked():
            old = self.store.load()
            old = replace(old, installed=frozenset(self.store.ledger(self.name) or ()))
            new = change(old)
            try:
                # Validate the whole desired ruleset before the first side effect.
                old_rules, new_rules = ruleset_of(old), ruleset_of(new)
                if assume_empty:
                    old_rules = rules.Ruleset()
            except BurrowError as exc:
                raise exc.wrap(where) from exc
            # A process killed between saving state and applying it leaves the kernel holding
            # anything from its old rules to its new ones: rebuild the whole table from state.
            known: rules.Ruleset | None = None if self.store.interrupted() else old_rules
            with self.store.applying():
                self.store.save(old, new, self.name)
                try:
                    installed = self.backend.apply(known, new_rules, old.installed)
                except Exception as exc:
                    self.store.save(new, old, self.name)
                    raise context(where, exc) from exc
                if installed != new.installed:
                    self.store.save(new, replace(new, installed=installed), self.name)
