"""Networks and sandboxes on disk (one JSON file each), with the IPAM lock.

Every name that becomes a path goes through `_file` and so through `netconf.check_name`:
a name from the command line (`../sandboxes/x`) can never reach outside its directory.
"""

from __future__ import annotations

import os
import stat
import sys
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
RESOLV, HOSTS, HOSTNAME = ".resolv.conf", ".hosts", ".hostname"


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

    @property
    def networks_dir(self) -> Path:
        """Where networks are, once any left in the old place (the runtime dir) are moved."""
        for old in self.paths.legacy_networks_dirs():
            if old.is_dir():
                migrate_networks(old, self.paths)
        return self.paths.networks_dir

    def networks(self) -> dict[str, dict[str, Any]]:
        return self._load_dir(self.networks_dir)

    def network(self, name: str) -> dict[str, Any]:
        data = read_json(_file(self.networks_dir, name, "network"))
        if data is None:
            raise BurrowError(f"network {name} does not exist; create it with "
                              f"`burrow network create {name}`")
        return data

    def save_network(self, net: dict[str, Any]) -> None:
        write_json(_file(self.networks_dir, net["name"], "network"), net)

    def delete_network(self, name: str) -> None:
        remove(_file(self.networks_dir, name, "network"))

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
        for suffix in (".json", RESOLV, HOSTS, HOSTNAME):
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


def migrate_networks(old: Path, paths: StatePaths) -> list[str]:
    """Move the networks of an older burrow (kept in the runtime dir, lost at every reboot) to
    the data directory, once, saying so on stderr. A name already taken there is not overwritten:
    the old file is renamed `NAME.json.conflict` (so this runs once) and named in the message."""
    try:
        st = os.lstat(old)
    except FileNotFoundError:
        return []
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        return []  # not ours (a planted /tmp/burrow-<uid>): never read from it
    paths.ensure_data()
    new_dir = paths.networks_dir
    moved: list[str] = []
    kept: list[str] = []
    for f in sorted(old.glob("*.json")):
        data = read_json(f)
        if data is None or data.get("name") != f.stem:
            continue
        target = new_dir / f.name
        try:
            with open(target, "x") as out:
                out.write(f.read_text())
        except FileExistsError:
            if read_json(target) != data:
                os.replace(f, f.with_name(f.name + ".conflict"))
                kept.append(f.stem)
                continue
        remove(f)
        moved.append(f.stem)
    try:
        old.rmdir()
    except OSError:
        pass  # something else is left there (a .conflict file): leave it
    if moved:
        print(f"burrow: moved network(s) {', '.join(moved)} from {old} to {new_dir}, where "
              "networks now live (they survive a reboot)", file=sys.stderr)
    if kept:
        print(f"burrow: network(s) {', '.join(kept)} in {old} not moved: {new_dir} has a "
              f"different network of that name; the old one is kept as NAME.json.conflict",
              file=sys.stderr)
    return moved
