"""Networks and sandboxes on disk (one JSON file each), with the IPAM lock."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netns.errors import BurrowError
from rootless.paths import StatePaths, locked, read_json, remove, write_json


@dataclass(frozen=True)
class Store:
    paths: StatePaths

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Held from address choice until the sandbox record is written: no double hand-out."""
        self.paths.ensure()
        with locked(self.paths.ipam_lock, what="network/sandbox state"):
            yield

    @staticmethod
    def _load_dir(d: Path) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        if d.exists():
            for f in sorted(d.glob("*.json")):
                data = read_json(f)
                if data is not None and isinstance(data.get("name"), str):
                    out[data["name"]] = data
        return out

    def networks(self) -> dict[str, dict[str, Any]]:
        return self._load_dir(self.paths.networks_dir)

    def network(self, name: str) -> dict[str, Any]:
        data = read_json(self.paths.networks_dir / f"{name}.json")
        if data is None:
            raise BurrowError(f"network {name} does not exist; create it with "
                              f"`burrow network create {name}`")
        return data

    def save_network(self, net: dict[str, Any]) -> None:
        write_json(self.paths.networks_dir / f"{net['name']}.json", net)

    def delete_network(self, name: str) -> None:
        remove(self.paths.networks_dir / f"{name}.json")

    def sandboxes(self) -> dict[str, dict[str, Any]]:
        return self._load_dir(self.paths.sandboxes_dir)

    def sandbox(self, name: str) -> dict[str, Any]:
        data = read_json(self.paths.sandboxes_dir / f"{name}.json")
        if data is None:
            raise BurrowError(f"sandbox {name} does not exist; see `burrow sandbox ls`, or "
                              f"create it with `burrow sandbox create {name}`")
        return data

    def save_sandbox(self, rec: dict[str, Any]) -> None:
        write_json(self.paths.sandboxes_dir / f"{rec['name']}.json", rec)

    def delete_sandbox(self, name: str) -> None:
        for suffix in (".json", ".resolv.conf", ".hosts"):
            remove(self.paths.sandboxes_dir / f"{name}{suffix}")

    def file(self, name: str, suffix: str) -> Path:
        return self.paths.sandboxes_dir / f"{name}{suffix}"

    def used_ips(self, network: str) -> set[str]:
        used: set[str] = set()
        for rec in self.sandboxes().values():
            att = rec.get("networks", {}).get(network)
            if att:
                used.update(att.get("static_ips", []))
        return used

    def users_of(self, network: str) -> list[str]:
        return sorted(n for n, rec in self.sandboxes().items()
                      if network in rec.get("networks", {}))


_ = os
