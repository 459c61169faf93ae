"""Persisted firewall intent under `<config_dir>/firewall/`, the single source of every render.

Layout (Netavark's names, JSON content):
    firewall/firewall-driver                 the backend that last wrote the state
    firewall/networks/<netid>.json           one NetworkFw
    firewall/ports/<netid>_<cid>.json        one PortFw
    firewall/installed.json                  backend bookkeeping (iptables: built-in jumps present)
    firewall/lock                            flock: one setup/teardown/reload at a time
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from pathlib import Path
from typing import Any

from netns import locks, statefiles
from netns.errors import context
from netns.firewall.types import Isolate, NetworkFw, PortFw
from netns.schema import PortMapping


@dataclass(frozen=True)
class Snapshot:
    """Everything persisted, keyed by file stem so diffs map to files one to one."""

    networks: dict[str, NetworkFw] = field(default_factory=dict)
    ports: dict[str, PortFw] = field(default_factory=dict)
    installed: frozenset[str] = frozenset()

    def ordered_networks(self) -> list[NetworkFw]:
        # Sorted by name so the same state always renders the same batch.
        return sorted(self.networks.values(), key=lambda n: (n.name, n.id))

    def ordered_ports(self) -> list[PortFw]:
        return [self.ports[k] for k in sorted(self.ports)]


def port_key(pf: PortFw) -> str:
    return f"{pf.network.id}_{pf.container_id}"


class StateStore:
    def __init__(self, config_dir: Path) -> None:
        self.root = Path(config_dir) / statefiles.FIREWALL_DIR

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive flock on firewall/lock, so parallel setups read-modify-write in turn."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise context(f"firewall state {self.root}", exc) from exc
        with locks.locked(self.root / statefiles.FIREWALL_LOCK):
            yield

    def interrupted(self) -> bool:
        """Whether a transaction was cut short (its process killed) between save and apply."""
        return (self.root / statefiles.FIREWALL_APPLYING).exists()

    @contextmanager
    def applying(self) -> Iterator[None]:
        """Mark the state ahead of the kernel for the block; a crash leaves the mark behind."""
        mark = self.root / statefiles.FIREWALL_APPLYING
        try:
            mark.touch()
        except OSError as exc:
            raise context(f"firewall state {self.root}", exc) from exc
        try:
            yield
        finally:
            mark.unlink(missing_ok=True)

    def load(self) -> Snapshot:
        try:
            networks = {p.stem: network_from_json(_read(p)) for p in _files(self.root / "networks")}
            ports = {p.stem: port_from_json(_read(p)) for p in _files(self.root / "ports")}
            inst_path = self.root / "installed.json"
            installed = frozenset(_read(inst_path)) if inst_path.exists() else frozenset()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise context(f"firewall state {self.root}: load", exc) from exc
        return Snapshot(networks, ports, installed)

    def save(self, old: Snapshot, new: Snapshot, driver: str) -> None:
        """Write only what changed between `old` and `new` (each file replaced atomically)."""
        try:
            _sync(self.root / "networks", old.networks, new.networks, network_to_json)
            _sync(self.root / "ports", old.ports, new.ports, port_to_json)
            if old.installed != new.installed:
                _write(self.root / "installed.json", sorted(new.installed))
            drv = self.root / "firewall-driver"
            if not drv.exists() or drv.read_text() != driver:
                _write_text(drv, driver)
        except OSError as exc:
            raise context(f"firewall state {self.root}: save", exc) from exc


def _files(d: Path) -> list[Path]:
    return sorted(d.glob("*.json")) if d.is_dir() else []


def _read(path: Path) -> Any:
    return json.loads(path.read_text())


def _write(path: Path, obj: Any) -> None:
    _write_text(path, json.dumps(obj, sort_keys=True))


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _sync(d: Path, old: dict[str, Any], new: dict[str, Any], enc: Any) -> None:
    for key in old.keys() - new.keys():
        (d / f"{key}.json").unlink(missing_ok=True)
    for key, value in new.items():
        if old.get(key) != value or not (d / f"{key}.json").exists():
            _write(d / f"{key}.json", enc(value))


def network_to_json(n: NetworkFw) -> dict[str, Any]:
    return {
        "name": n.name, "id": n.id, "bridge": n.bridge,
        "subnets": [str(s) for s in n.subnets], "gateways": [str(g) for g in n.gateways],
        "isolate": n.isolate, "dns_port": n.dns_port,
    }


def network_from_json(obj: dict[str, Any]) -> NetworkFw:
    isolate: Isolate = obj.get("isolate", "false")
    if isolate not in ("false", "true", "strict"):
        raise ValueError(f"bad isolate {isolate!r}")
    return NetworkFw(
        name=obj["name"], id=obj["id"], bridge=obj["bridge"],
        subnets=tuple(ip_network(s) for s in obj["subnets"]),
        gateways=tuple(ip_address(g) for g in obj["gateways"]),
        isolate=isolate, dns_port=obj.get("dns_port"),
    )


def port_to_json(p: PortFw) -> dict[str, Any]:
    return {
        "container_id": p.container_id, "network": network_to_json(p.network),
        "container_v4": str(p.container_v4) if p.container_v4 else None,
        "container_v6": str(p.container_v6) if p.container_v6 else None,
        "mappings": [m.to_json() for m in p.mappings],
    }


def port_from_json(obj: dict[str, Any]) -> PortFw:
    v4, v6 = obj.get("container_v4"), obj.get("container_v6")
    return PortFw(
        container_id=obj["container_id"], network=network_from_json(obj["network"]),
        container_v4=IPv4Address(v4) if v4 else None,
        container_v6=IPv6Address(v6) if v6 else None,
        mappings=tuple(PortMapping.from_json(m) for m in obj["mappings"]),
    )
