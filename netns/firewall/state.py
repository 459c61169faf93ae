"""Persisted firewall intent under `<config_dir>/firewall/`, in Netavark's own layout and format.

Layout (Netavark 2.x `src/firewall/state.rs`; 1.4 writes no state):
    firewall/firewall-driver            the driver that last wrote the state (text)
    firewall/networks/<netid>           one SetupNetwork (serde JSON), written once per network
    firewall/ports/<netid>_<cid>        one PortForwardConfig (serde JSON) per container
burrow's own files beside them (Netavark reads only the three above):
    firewall/.burrow-ledger.json        backend bookkeeping: what it knows is in the kernel
    firewall/lock                       flock: one setup/teardown/reload at a time; its
                                        content is non-empty while the kernel may be ahead
                                        of these files (older burrows: firewall/applying)

So `firewall-reload` by either tool restores the other's networks. Each setup or teardown
touches only its own files; only `load()` (reload, the nftables render) reads them all.
burrow's older layout (`<netid>.json` with burrow's own keys, `installed.json`) is converted
once, the first time the store is locked.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import Any

from netns import locks, statefiles
from netns.errors import context
from netns.firewall.types import Isolate, NetworkFw, PortFw
from netns.schema import IPAddress, IPNetwork, PortMapping

ISOLATION = {"false": "Never", "true": "Normal", "strict": "Strict"}
ISOLATE_OF: dict[str, Isolate] = {"Never": "false", "Normal": "true", "Strict": "strict"}


@dataclass(frozen=True)
class Snapshot:
    """Everything persisted, keyed by file name so diffs map to files one to one."""

    networks: dict[str, NetworkFw] = field(default_factory=dict)
    ports: dict[str, PortFw] = field(default_factory=dict)
    installed: frozenset[str] = frozenset()

    def ordered_networks(self) -> list[NetworkFw]:
        # Sorted by name so the same state always renders the same batch.
        return sorted(self.networks.values(), key=lambda n: (n.name, n.id))

    def ordered_ports(self) -> list[PortFw]:
        return [self.ports[k] for k in sorted(self.ports)]


def key_of(network_id: str, container_id: str) -> str:
    """`<netid>_<cid>` (Netavark's name). A '_' inside a network id (never in Podman's hex
    ids) is written `%5F`, so the first '_' always ends the id and no two networks' files
    can share a name: netid `a_b` + cid `c` and netid `a` + cid `b_c` would."""
    return f"{network_id.replace('_', '%5F')}_{container_id}"


def port_key(pf: PortFw) -> str:
    return key_of(pf.network.id, pf.container_id)


class StateStore:
    def __init__(self, config_dir: Path) -> None:
        self.root = Path(config_dir) / statefiles.FIREWALL_DIR
        self.networks = self.root / statefiles.FIREWALL_NETWORKS
        self.ports = self.root / statefiles.FIREWALL_PORTS
        self._lock_fd: int | None = None  # while locked(): the lock file (it holds the mark)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive flock on firewall/lock, so parallel setups read-modify-write in turn."""
        try:
            statefiles.private_dir(self.root)
        except OSError as exc:
            raise context(f"firewall state {self.root}", exc) from exc
        with locks.locked(self.root / statefiles.FIREWALL_LOCK) as fd:
            self._lock_fd = fd
            try:
                self._migrate()
                yield
            finally:
                self._lock_fd = None

    def interrupted(self) -> bool:
        """Whether a transaction was cut short (its process killed) between apply and save:
        the lock file still holds the mark, or an older burrow's `applying` file is there."""
        try:
            if (self.root / statefiles.FIREWALL_LOCK).stat().st_size > 0:
                return True
        except OSError:
            pass
        return (self.root / statefiles.FIREWALL_APPLYING).exists()

    @contextmanager
    def applying(self) -> Iterator[None]:
        """Mark the kernel as maybe out of step with the files; only a crash leaves the mark.

        The mark is the held lock file's content, not a file of its own: a file made and
        removed per change is an inode allocated and freed per change, and on a journal-less
        ext4 every file create skips (reading each one's inode) the inodes freed in the last
        30 s, so each setup's creates got slower with the number of changes before it."""
        fd = self._lock_fd
        if fd is None:
            raise RuntimeError("StateStore.applying() outside StateStore.locked()")
        try:
            os.pwrite(fd, b"applying\n", 0)
        except OSError as exc:
            raise context(f"firewall state {self.root}", exc) from exc
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            (self.root / statefiles.FIREWALL_APPLYING).unlink(missing_ok=True)  # an older mark

    # -- the per-change API: only the files of this change -----------------------------------

    def pin(self, networks: Iterable[NetworkFw], fresh: Iterable[str],
            default: Isolate = "false") -> list[NetworkFw]:
        """Networks whose bridge is up keep the isolation they were set up with: a later
        container's request can't change it under the running ones (one small read each).
        Others without an `isolate` option get the backend's `default`."""
        new_bridges, out = set(fresh), []
        for net in networks:
            path = self.networks / net.id
            isolation = None
            if net.bridge not in new_bridges and path.exists():
                try:
                    isolation = _read(path).get("isolation")
                except (OSError, ValueError, AttributeError):
                    isolation = None
            if isolation in ISOLATE_OF:
                net = replace(net, isolate=ISOLATE_OF[isolation], isolate_given=True)
            elif not net.isolate_given:
                net = replace(net, isolate=default, isolate_given=True)
            out.append(net)
        return out

    def add(self, networks: Iterable[NetworkFw], ports: Iterable[PortFw], driver: str,
            fresh: Iterable[str] = ()) -> None:
        """What Netavark's `write_fw_config` does: the driver, new networks, every port file."""
        new_bridges = set(fresh)
        try:
            _write_text(self.root / statefiles.FIREWALL_DRIVER, driver, only_if_changed=True)
            for net in networks:
                path = self.networks / net.id
                # Netavark writes it once (create_new); a new bridge means the old file is stale.
                if net.bridge in new_bridges or not path.exists():
                    _write_text(path, _dumps(network_to_json(net)))
            for pf in ports:
                _write_text(self.ports / port_key(pf), _dumps(port_to_json(pf)))
        except OSError as exc:
            raise context(f"firewall state {self.root}: save", exc) from exc

    def remove(self, networks: Iterable[NetworkFw], ports: Iterable[PortFw]) -> None:
        """Netavark's `remove_fw_config`: the port files, and the networks torn down."""
        try:
            for pf in ports:
                (self.ports / port_key(pf)).unlink(missing_ok=True)
            for net in networks:
                (self.networks / net.id).unlink(missing_ok=True)
        except OSError as exc:
            raise context(f"firewall state {self.root}: save", exc) from exc

    def has_port(self, pf: PortFw) -> bool:
        """Whether this container's port file is there (it was set up already)."""
        return (self.ports / port_key(pf)).exists()

    def _handles_dir(self, driver: str) -> Path:
        name = statefiles.FIREWALL_IPT_HANDLES if driver == "iptables" else statefiles.FIREWALL_HANDLES
        return self.root / name

    def handles(self, key: str, driver: str = "nftables") -> Any:
        """The rule handles saved for one container's ports (None: unknown)."""
        try:
            return _read(self._handles_dir(driver) / key)
        except (OSError, ValueError):
            return None

    def save_handles(self, key: str, value: Any, driver: str = "nftables") -> None:
        try:
            _write_text(self._handles_dir(driver) / key, json.dumps(value))
        except OSError as exc:
            raise context(f"firewall state {self.root}: save", exc) from exc

    def drop_handles(self, keys: Iterable[str], driver: str = "nftables") -> None:
        for key in keys:
            (self._handles_dir(driver) / key).unlink(missing_ok=True)

    def ledger(self, driver: str) -> Any:
        """The backend's bookkeeping (None: nothing known)."""
        path = self.root / statefiles.FIREWALL_LEDGER
        try:
            data = _read(path) if os.path.lexists(path) else {}
        except (OSError, ValueError):
            return None  # unreadable: the backend asks the kernel instead
        return data.get(driver) if isinstance(data, dict) else None

    def save_ledger(self, driver: str, value: Any) -> None:
        path = self.root / statefiles.FIREWALL_LEDGER
        try:
            data = _read(path) if os.path.lexists(path) else {}
        except (OSError, ValueError):
            data = {}
        if not isinstance(data, dict) or data.get(driver) != value:
            data = {**(data if isinstance(data, dict) else {}), driver: value}
            try:
                _write_text(path, json.dumps(data, sort_keys=True))
            except OSError as exc:
                raise context(f"firewall state {self.root}: save", exc) from exc

    # -- everything (firewall-reload, the nftables render) -----------------------------------

    def load(self) -> Snapshot:
        try:
            raw_nets = {p.name: _read(p) for p in _files(self.networks)}
            raw_ports = {p.name: _read(p) for p in _files(self.ports)}
            return snapshot_of(raw_nets, raw_ports)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise context(f"firewall state {self.root}: load", exc) from exc

    def save(self, old: Snapshot, new: Snapshot, driver: str) -> None:
        """Write only what changed between `old` and `new` (each file replaced atomically)."""
        gone_nets = [n for k, n in old.networks.items() if k not in new.networks]
        gone_ports = [p for k, p in old.ports.items() if k not in new.ports]
        self.remove(gone_nets, gone_ports)
        try:
            _write_text(self.root / statefiles.FIREWALL_DRIVER, driver, only_if_changed=True)
            for key, net in new.networks.items():
                if old.networks.get(key) != net or not (self.networks / key).exists():
                    _write_text(self.networks / key, _dumps(network_to_json(net)))
            for key, pf in new.ports.items():
                if old.ports.get(key) != pf or not (self.ports / key).exists():
                    _write_text(self.ports / key, _dumps(port_to_json(pf)))
        except OSError as exc:
            raise context(f"firewall state {self.root}: save", exc) from exc
        if old.installed != new.installed:
            self.save_ledger(driver, sorted(new.installed))

    def _migrate(self) -> None:
        """Convert burrow's old layout once (its mark, installed.json, is an O(1) check)."""
        mark = self.root / statefiles.FIREWALL_OLD_INSTALLED
        if not mark.exists():
            return
        try:
            for path in _files(self.networks, ".json"):
                net = _old_network(_read(path))
                _write_text(self.networks / net.id, _dumps(network_to_json(net)))
                path.unlink()
            for path in _files(self.ports, ".json"):
                pf = _old_port(_read(path))
                _write_text(self.ports / port_key(pf), _dumps(port_to_json(pf)))
                path.unlink()
            installed = _read(mark)
            if "nft-skeleton" in installed:
                self.save_ledger("nftables", ["nft-skeleton"])
            mark.unlink()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise context(f"firewall state {self.root}: convert the old layout", exc) from exc


def _files(d: Path, suffix: str | None = None) -> list[Path]:
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith(".")
                  and (suffix is None or p.name.endswith(suffix)))


def _read(path: Path) -> Any:
    return json.loads(statefiles.read_text(path))


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))  # serde_json::to_writer's compact form


def _write_text(path: Path, text: str, *, only_if_changed: bool = False) -> None:
    if only_if_changed:
        try:
            if statefiles.read_text(path) == text:
                return
        except (OSError, ValueError):
            pass  # missing, or not what it should be: replaced below
    path.parent.mkdir(parents=True, exist_ok=True)
    statefiles.replace_text(path, text)


# -- Netavark's SetupNetwork and PortForwardConfig ------------------------------------------


def network_to_json(n: NetworkFw) -> dict[str, Any]:
    out: dict[str, Any] = {
        "subnets": [str(s) for s in n.subnets] or None,
        "bridge_name": n.bridge,
        "network_id": n.id,
        "network_hash_name": n.hash,
        "isolation": ISOLATION[n.isolate],
        "dns_port": n.dns_port or 53,
    }
    # Netavark 2.x's SetupNetwork fields, written only when set (older readers never see them)
    for key, addr in (("outbound_addr4", n.outbound4), ("outbound_addr6", n.outbound6)):
        if addr is not None:
            out[key] = str(addr)
    return out


def network_from_json(obj: dict[str, Any], name: str | None = None,
                      gateways: tuple[IPAddress, ...] = ()) -> NetworkFw:
    """A SetupNetwork; it has no name (only its hash) and no gateways: port files have them."""
    isolation = obj.get("isolation", "Never")
    if isolation not in ISOLATE_OF:
        raise ValueError(f"bad isolation {isolation!r}")
    port = obj.get("dns_port", 53)
    if not isinstance(port, int):
        raise ValueError(f"bad dns_port {port!r}")
    hash_name = str(obj["network_hash_name"])
    return NetworkFw(
        name=name or hash_name, id=str(obj["network_id"]), bridge=str(obj["bridge_name"]),
        subnets=tuple(ip_network(s) for s in obj.get("subnets") or ()),
        gateways=gateways if port != 53 else (),
        isolate=ISOLATE_OF[isolation], dns_port=None if port == 53 else port, hash=hash_name,
        outbound4=IPv4Address(obj["outbound_addr4"]) if obj.get("outbound_addr4") else None,
        outbound6=IPv6Address(obj["outbound_addr6"]) if obj.get("outbound_addr6") else None,
    )


def _subnet_for(net: NetworkFw, ip: IPAddress | None) -> IPNetwork | None:
    if ip is None:
        return None
    same = [s for s in net.subnets if s.version == ip.version]
    return next((s for s in same if ip in s), same[0] if same else None)


def port_to_json(p: PortFw) -> dict[str, Any]:
    net = p.network
    sub4, sub6 = _subnet_for(net, p.container_v4), _subnet_for(net, p.container_v6)
    return {
        "container_id": p.container_id,
        "network_id": net.id,
        "port_mappings": [m.to_json() for m in p.mappings] or None,
        "network_name": net.name,
        "network_hash_name": net.hash,
        "container_ip_v4": str(p.container_v4) if p.container_v4 else None,
        "subnet_v4": str(sub4) if sub4 else None,
        "container_ip_v6": str(p.container_v6) if p.container_v6 else None,
        "subnet_v6": str(sub6) if sub6 else None,
        "dns_port": net.dns_port or 53,
        "dns_server_ips": [str(g) for g in net.gateways] if net.dns_port else [],
    }


def port_from_json(obj: dict[str, Any], net: NetworkFw) -> PortFw:
    v4, v6 = obj.get("container_ip_v4"), obj.get("container_ip_v6")
    return PortFw(
        container_id=str(obj["container_id"]), network=net,
        container_v4=IPv4Address(v4) if v4 else None,
        container_v6=IPv6Address(v6) if v6 else None,
        mappings=tuple(PortMapping.from_json(m) for m in obj.get("port_mappings") or ()),
    )


def snapshot_of(raw_nets: dict[str, Any], raw_ports: dict[str, Any]) -> Snapshot:
    """Join the files: a network's name and DNS addresses come from its containers' files."""
    names: dict[str, str] = {}
    gateways: dict[str, tuple[IPAddress, ...]] = {}
    for obj in raw_ports.values():
        nid = str(obj.get("network_id", ""))
        names.setdefault(nid, str(obj["network_name"]))
        gws = tuple(ip_address(g) for g in obj.get("dns_server_ips") or ())
        gateways[nid] = tuple(dict.fromkeys((*gateways.get(nid, ()), *gws)))
    nets: dict[str, NetworkFw] = {}
    for key, obj in raw_nets.items():
        nid = str(obj["network_id"])
        nets[key] = network_from_json(obj, names.get(nid), gateways.get(nid, ()))
    ports: dict[str, PortFw] = {}
    for key, obj in raw_ports.items():
        net = nets.get(str(obj.get("network_id", "")))
        if net is None:
            net = _network_of_port(obj)
        else:
            net = replace(net, name=str(obj["network_name"]))
        ports[key] = port_from_json(obj, net)
    return Snapshot(nets, ports)


def _network_of_port(obj: dict[str, Any]) -> NetworkFw:
    """A port file whose network file is gone: enough of the network to remove its rules."""
    subnets: list[IPv4Network | IPv6Network] = [
        ip_network(obj[k]) for k in ("subnet_v4", "subnet_v6") if obj.get(k)]
    port = obj.get("dns_port", 53)
    return NetworkFw(
        name=str(obj["network_name"]), id=str(obj.get("network_id") or obj["network_hash_name"]),
        bridge="unknown", subnets=tuple(subnets),
        gateways=tuple(ip_address(g) for g in obj.get("dns_server_ips") or ()),
        dns_port=None if port == 53 else port, hash=str(obj["network_hash_name"]),
    )


# -- burrow's old layout (read once, to convert) ---------------------------------------------


def _old_network(obj: dict[str, Any]) -> NetworkFw:
    isolate: Isolate = obj.get("isolate", "false")
    if isolate not in ISOLATION:
        raise ValueError(f"bad isolate {isolate!r}")
    return NetworkFw(
        name=obj["name"], id=obj["id"], bridge=obj["bridge"],
        subnets=tuple(ip_network(s) for s in obj["subnets"]),
        gateways=tuple(ip_address(g) for g in obj["gateways"]),
        isolate=isolate, dns_port=obj.get("dns_port"),
    )


def _old_port(obj: dict[str, Any]) -> PortFw:
    v4, v6 = obj.get("container_v4"), obj.get("container_v6")
    return PortFw(
        container_id=obj["container_id"], network=_old_network(obj["network"]),
        container_v4=IPv4Address(v4) if v4 else None,
        container_v6=IPv6Address(v6) if v6 else None,
        mappings=tuple(PortMapping.from_json(m) for m in obj["mappings"]),
    )
