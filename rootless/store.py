"""Networks and sandboxes on disk (one JSON file each), with the IPAM lock.

Every name that becomes a path goes through `_file` and so through `netconf.check_name`:
a name from the command line (`../sandboxes/x`) can never reach outside its directory.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netns.errors import BurrowError
from rootless.netconf import check_name
from rootless.paths import StatePaths, locked, read_json, remove, write_json
from rootless.records import SandboxRecord

# The files of one sandbox besides its record: what `burrow exec` mounts over /etc.
RESOLV, HOSTS = ".resolv.conf", ".hosts"


def _file(d: Path, name: str, what: str, suffix: str = ".json") -> Path:
    return d / f"{check_name(name, what)}{suffix}"


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
                if data is not None and data.get("name") == f.stem:
                    out[f.stem] = data
        return out

    def networks(self) -> dict[str, dict[str, Any]]:
        return self._load_dir(self.paths.networks_dir)

    def network(self, name: str) -> dict[str, Any]:
        data = read_json(_file(self.paths.networks_dir, name, "network"))
        if data is None:
            raise BurrowError(f"network {name} does not exist; create it with "
                              f"`burrow network create {name}`")
        return data

    def save_network(self, net: dict[str, Any]) -> None:
        write_json(_file(self.paths.networks_dir, net["name"], "network"), net)

    def delete_network(self, name: str) -> None:
        remove(_file(self.paths.networks_dir, name, "network"))

    def sandboxes(self) -> dict[str, SandboxRecord]:
        out: dict[str, SandboxRecord] = {}
        for name, data in self._load_dir(self.paths.sandboxes_dir).items():
            try:
                out[name] = SandboxRecord.from_json(data)
            except BurrowError:
                continue  # a foreign or torn file is not a sandbox
        return out

    def exists(self, name: str) -> bool:
        return _file(self.paths.sandboxes_dir, name, "sandbox").exists()

    def sandbox(self, name: str) -> SandboxRecord:
        data = read_json(_file(self.paths.sandboxes_dir, name, "sandbox"))
        if data is None:
            raise BurrowError(f"sandbox {name} does not exist; see `burrow sandbox ls`, or "
                              f"create it with `burrow sandbox create {name}`")
        return SandboxRecord.from_json(data)

    def save_sandbox(self, rec: SandboxRecord) -> None:
        write_json(_file(self.paths.sandboxes_dir, rec.name, "sandbox"), rec.to_json())

    def delete_sandbox(self, name: str) -> None:
        for suffix in (".json", RESOLV, HOSTS):
            remove(_file(self.paths.sandboxes_dir, name, "sandbox", suffix))

    def file(self, name: str, suffix: str) -> Path:
        return _file(self.paths.sandboxes_dir, name, "sandbox", suffix)

    def used_ips(self, network: str) -> set[str]:
        used: set[str] = set()
        for rec in self.sandboxes().values():
            att = rec.attachment(network)
            if att:
                used.update(att.static_ips)
        return used

    def users_of(self, network: str) -> list[str]:
        return sorted(n for n, rec in self.sandboxes().items() if network in rec.network_names)
