"""firewalld backend (`--firewall-driver firewalld`): Netavark 2.x's layout over firewalld's D-Bus.

The plan (which zone, policies and entries) is `firewalld_plan`; this adapter reads what
firewalld has, asks the plan for the change, and writes it back, one D-Bus call per source and
one `setPolicySettings` per policy touched. No firewall-cmd process runs.

- Setup validates everything first, then applies; if a call fails, what this setup changed is
  put back (sources removed, each policy's entries restored) before the error is returned.
- Teardown goes on past a failure and reports every one; removing what is not there is no error,
  so a teardown can run again.
- The zone and the four policies are permanent, made once (as Netavark's) and kept. Making them
  needs a firewalld reload, which drops every runtime source and entry: the saved state of all
  networks is then applied again in the same step, so running containers keep their network.
- State files are the other drivers' (`firewall/networks`, `firewall/ports`), so `firewall-reload`
  and `firewalld-reload` re-apply them after a `firewall-cmd --reload`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

from netns.errors import BurrowError, MultiError
from netns.firewall import firewalld_plan as fp
from netns.firewall.rules import PortDnat, build
from netns.firewall.state import Snapshot, StateStore
from netns.firewall.types import NetworkFw, PortFw
from netns.firewalld import api
from netns.firewalld.api import Firewalld
from netns.firewalld.bus import Call

Connect = Callable[[], AbstractContextManager[Firewalld | None]]


@dataclass(frozen=True)
class Change:
    """What one transaction adds and removes, and whose forwards go by address (teardown)."""

    add: fp.Plan = fp.Plan()
    remove: fp.Plan = fp.Plan()
    drop_to: tuple[str, ...] = ()  # container addresses: every forward leading to them goes


class Applied:
    """The undo log of one setup: what to put back if a later call fails."""

    def __init__(self) -> None:
        self.sources: list[str] = []  # sources this setup bound to the zone
        self.policies: list[tuple[fp.Update, fp.Current]] = []

    def undo(self, fw: Firewalld) -> list[BurrowError]:
        errors: list[BurrowError] = []
        for upd, cur in reversed(self.policies):
            _collect(errors, f"rollback: restore policy {upd.policy}",
                     _write, fw, fp.restore(upd, cur))
        for src in reversed(self.sources):
            _collect(errors, f"rollback: remove source {src} from zone {fp.ZONE}",
                     fw.remove_source, fp.ZONE, src)
        return errors


def _collect(errors: list[BurrowError], what: str, step: Callable[..., object],
             *args: Any) -> None:
    try:
        step(*args)
    except BurrowError as exc:
        errors.append(exc.wrap(what))


def _write(fw: Firewalld, upd: fp.Update) -> None:
    settings: dict[str, Any] = {}
    if upd.forward_ports is not None:
        settings["forward_ports"] = list(upd.forward_ports)
    if upd.rich_rules is not None:
        settings["rich_rules"] = list(upd.rich_rules)
    fw.set_policy_settings(upd.policy, settings)


def ensure_base(fw: Firewalld) -> bool:
    """Make the permanent zone and policies that the running config lacks (Netavark's check:
    running first, then permanent). True when firewalld was reloaded to load them."""
    running = set(fw.policies())
    if fp.ZONE in fw.zones() and all(name in running for name in fp.POLICY_NAMES):
        return False
    if fp.ZONE not in fw.config_zone_names():
        fw.config_add_zone(fp.ZONE, {})
    permanent = set(fw.config_policy_names())
    for spec in fp.base_policies(_version(fw)):
        if spec.name not in permanent:
            fw.config_add_policy(spec.name, spec.settings())
    fw.reload()
    return True


def _version(fw: Firewalld) -> tuple[int, ...]:
    """firewalld's version (its main object's `version` property); (0,) when unknown."""
    try:
        (value,) = fw.bus.call(Call(api.SERVICE, api.PATH, "org.freedesktop.DBus.Properties"),
                               "Get", "ss", (api.IFACE, "version"))
    except BurrowError:
        return (0,)
    return fp.parse_version(str(value[1]) if isinstance(value, tuple) else str(value))


def apply_setup(fw: Firewalld, change: Change) -> None:
    """Bind the sources, then update each policy; on a failure undo this change and raise."""
    done = Applied()
    try:
        for src in change.add.sources:
            if fw.zone_of_source(src) != fp.ZONE:
                fw.change_zone_of_source(fp.ZONE, src)
                done.sources.append(src)
        for name in fp.POLICY_NAMES:
            add, remove = change.add.entries(name), change.remove.entries(name)
            if not add and not remove:
                continue
            cur = fp.Current.parse(name, fw.policy_settings(name))
            upd = fp.merge(name, cur, add, remove)
            if upd:
                _write(fw, upd)
                done.policies.append((upd, cur))
    except BurrowError as exc:
        undo_errors = done.undo(fw)
        if undo_errors:
            raise MultiError([exc, *undo_errors]) from exc
        raise


def apply_teardown(fw: Firewalld, change: Change) -> list[BurrowError]:
    """Remove everything of this change, going on past failures; returns them all."""
    errors: list[BurrowError] = []
    for name in fp.POLICY_NAMES:
        add, remove = change.add.entries(name), change.remove.entries(name)
        drop_to = change.drop_to if name in (fp.PORTFWD, fp.HOSTFWD) else ()
        if add or remove or drop_to:
            _collect(errors, f"update policy {name}", _update, fw, name, add, remove, drop_to)
    for src in change.remove.sources:
        _collect(errors, f"remove source {src} from zone {fp.ZONE}", _unbind, fw, src)
    return errors


def _update(fw: Firewalld, name: str, add: fp.Entries, remove: fp.Entries,
            drop_to: tuple[str, ...]) -> None:
    cur = fp.Current.parse(name, fw.policy_settings(name))
    upd = fp.merge(name, cur, add, remove, drop_to=drop_to)
    if upd:
        _write(fw, upd)


def _unbind(fw: Firewalld, src: str) -> None:
    if fw.zone_of_source(src) == fp.ZONE:  # not ours (moved by someone): leave it
        fw.remove_source(fp.ZONE, src)


class FirewalldFirewall:
    """A `Firewall` speaking firewalld's D-Bus API (one bus connection per transaction)."""

    name = "firewalld"

    def __init__(self, store: StateStore, env: Mapping[str, str], *,
                 connect: Connect | None = None) -> None:
        self.store = store
        self._connect: Connect = connect or (lambda: api.connect(env))

    @contextmanager
    def _firewalld(self) -> Iterator[Firewalld]:
        try:
            with self._connect() as fw:
                if fw is None:
                    raise BurrowError("firewalld is not running (no org.fedoraproject.FirewallD1 "
                                      "on the system bus; DBUS_SYSTEM_BUS_ADDRESS picks the bus)")
                yield fw
        except MultiError as exc:  # each part gets the driver's name
            raise MultiError([e.wrap(f"firewall ({self.name})") for e in exc.errors]) from exc
        except BurrowError as exc:
            raise exc.wrap(f"firewall ({self.name})") from exc

    def setup(self, networks: Sequence[NetworkFw], ports: Sequence[PortFw], *,
              fresh: Iterable[str] = ()) -> None:
        dnats = self._validate(networks, ports)
        snat = [n.name for n in networks if n.outbound4 is not None or n.outbound6 is not None]
        if snat:
            # firewalld has no SNAT to a given address (rich rules only masquerade), and
            # netavark_policy masquerades every subnet: refuse rather than masquerade silently.
            raise BurrowError(
                f"firewall ({self.name}): network {snat[0]!r}: outbound_addr4/outbound_addr6 "
                "is not supported by the firewalld driver (firewalld can only masquerade); "
                "use --firewall-driver nftables")
        with self.store.locked():
            networks = self.store.pin(networks, fresh := set(fresh))
            with self._firewalld() as fw:
                if dnats and fw.strict_forward_ports():
                    raise BurrowError("Port forwarding not possible as firewalld "
                                      "StrictForwardPorts enabled")
                with self.store.applying():
                    reloaded = ensure_base(fw)
                    saved = self._saved(networks, reloaded)
                    add = fp.network_plan(networks) + fp.port_plan(dnats)
                    iso_add, iso_remove = self._isolation(saved, networks, (), whole=reloaded)
                    if reloaded:  # the reload dropped every running network's entries
                        add = add + self._plan_of(saved.ordered_networks(), saved.ordered_ports())
                    apply_setup(fw, Change(add + iso_add, iso_remove))
                    self.store.add(networks, ports, self.name, fresh)
                    self._save_ledger(networks, ())

    def teardown(self, networks: Sequence[NetworkFw], ports: Sequence[PortFw]) -> None:
        dnats = self._validate(networks, ports)
        with self.store.locked():
            # Forwards are found by address too (as Netavark's teardown finds them) when the
            # container has mappings, or after a crash left the state unsure.
            unsure = self.store.interrupted()
            addrs = tuple(str(ip) for pf in ports if pf.mappings or unsure
                          for ip in (pf.container_v4, pf.container_v6) if ip is not None)
            with self._firewalld() as fw, self.store.applying():
                saved = self._saved(networks, False)
                iso_add, iso_remove = self._isolation(saved, (), networks)
                remove = fp.network_plan(networks) + fp.port_plan(dnats) + iso_remove
                errors = apply_teardown(fw, Change(iso_add, remove, addrs))
                if errors:
                    raise MultiError(errors)
                self.store.remove(networks, ports)
                self._save_ledger((), networks)

    def reload(self) -> None:
        """Add whatever of the saved networks and ports firewalld lacks (after its reload)."""
        with self.store.locked():
            snap = self.store.load()
            nets, ports = snap.ordered_networks(), snap.ordered_ports()
            self._validate(nets, ports)
            if not nets and not ports:
                return  # nothing saved: no reason to make the zone and policies (a reload)
            with self._firewalld() as fw, self.store.applying():
                ensure_base(fw)
                apply_setup(fw, Change(self._plan_of(nets, ports) + fp.isolation_plan(nets)))
                self._save_ledger(nets, ())

    # -- helpers -------------------------------------------------------------------------------

    def _plan_of(self, nets: Sequence[NetworkFw], ports: Sequence[PortFw]) -> fp.Plan:
        return fp.network_plan(nets) + fp.port_plan(build(nets, ports).ports)

    def _saved(self, networks: Sequence[NetworkFw], reloaded: bool) -> Snapshot:
        """Every saved network and port, when this change needs them (a reload, isolation)."""
        isolated = self._ledger().get("isolated", {})
        if reloaded or isolated or any(n.isolate != "false" for n in networks):
            return self.store.load()
        return Snapshot()

    def _isolation(self, saved: Snapshot, added: Sequence[NetworkFw],
                   removed: Sequence[NetworkFw], *, whole: bool = False
                   ) -> tuple[fp.Plan, fp.Plan]:
        """The drop rules to add and to remove when `added` come and `removed` go (`whole`:
        all of them, none being in place)."""
        before = {n.id: n for n in saved.ordered_networks()}
        after = {**before, **{n.id: n for n in added}}
        for n in removed:
            after.pop(n.id, None)
        old = () if whole else fp.isolation_plan(before.values()).entries(fp.POLICY).rich_rules
        new = fp.isolation_plan(after.values()).entries(fp.POLICY).rich_rules
        gone = tuple(r for r in old if r not in new)
        come = tuple(r for r in new if r not in old)
        return (fp.Plan((), ((fp.POLICY, fp.Entries(rich_rules=come)),) if come else ()),
                fp.Plan((), ((fp.POLICY, fp.Entries(rich_rules=gone)),) if gone else ()))

    def _ledger(self) -> dict[str, Any]:
        led = self.store.ledger(self.name)
        return led if isinstance(led, dict) else {}

    def _save_ledger(self, added: Sequence[NetworkFw], removed: Sequence[NetworkFw]) -> None:
        """Which networks are isolated: only then does a change read every saved network."""
        isolated = {str(k): str(v) for k, v in self._ledger().get("isolated", {}).items()}
        for n in added:
            if n.isolate != "false":
                isolated[n.id] = n.isolate
            else:
                isolated.pop(n.id, None)
        for n in removed:
            isolated.pop(n.id, None)
        self.store.save_ledger(self.name, {"isolated": dict(sorted(isolated.items()))})

    def _validate(self, nets: Sequence[NetworkFw], ports: Sequence[PortFw]) -> list[PortDnat]:
        try:
            return list(build(nets, ports).ports)
        except BurrowError as exc:
            raise exc.wrap(f"firewall ({self.name})") from exc
