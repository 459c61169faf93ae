"""The rootful world: `burrow` run by real root.

No user namespace, no connector, no userspace forwarder. The world is the network namespace
burrow runs in: the engine makes bridges there, published ports are kernel DNAT rules the engine
writes from `port_mappings`, and burrow-dns is started by the engine. A sandbox is a network
namespace bind-mounted on `<state>/netns/NAME` (like `ip netns add`), so it needs no process.

State lives in `/run/burrow/`, networks in `/etc/burrow/` (`BURROW_STATE_DIR` overrides both;
see rootless.paths). A marker records the network namespace the state belongs to, so one state
directory is never used from two worlds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netns.errors import BurrowError
from rootless import dnswatch
from rootless.backend import Runtime
from rootless.hostdns import host_servers
from rootless.paths import StatePaths, locked, read_json, remove, write_json
from rootless.ports.kernel import KernelPorts
from rootless.procs import ProcRef, stop_all
from rootless.records import SandboxRecord
from rootless.settings import Settings

# The engine's nftables table for the burrow CLI's state dir. Not Podman's `netavark`: rootful
# Podman (with burrow or netavark) may share this netns, and each state dir owns its table.
FW_FAMILY, FW_TABLE = "inet", "burrow"
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def is_initial_root() -> bool:
    """euid 0 in the initial user namespace (not root of some user namespace)."""
    if os.geteuid() != 0:
        return False
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split()[:3] == ["0", "0", "4294967295"]
    except OSError:
        return False


def _netns_inode(path: str = "/proc/self/ns/net") -> int:
    return os.stat(path).st_ino


def pids_in_netns(inode: int) -> list[int]:
    """Every live process whose network namespace is `inode` (never this one)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino == inode:
                found.append(int(entry))
        except OSError:
            pass
    return found


def _engine_pids(config: Path) -> list[ProcRef]:
    """The warm engine of this config dir and burrow-dns forked from it, in this netns.

    Both name the config dir in their command line: as an argument, or in the process title
    they set (`burrow engine DIR`, `burrow-dns --config DIR/aardvark-dns ...`), which shows
    as one string padded with NULs."""
    cfg = os.fsencode(str(config))
    mine = _netns_inode()
    out = []
    for pid in pids_in_netns(mine):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().rstrip(b"\0").split(b"\0")
        except OSError:
            continue
        # An argument, or a word of the title: the dir itself or a path in it. Not split at
        # spaces first: a state dir may hold one (`burrow down` left its engine running).
        ours = any(a == cfg or a.startswith(cfg + b"/") or b" " + cfg + b"/" in a
                   or a.endswith(b" " + cfg) for a in args)
        ref = ProcRef.of(pid)
        if ours and ref is not None and ref.alive():
            out.append(ref)
    return out


def _drop_empty_table(rt: RootfulRuntime) -> None:
    """The engine leaves its nftables table with empty chains; remove it if nobody has a rule
    in it (Podman may share the table, so a table with rules stays)."""
    res = rt.run(["nft", "-j", "list", "table", FW_FAMILY, FW_TABLE], check=False)
    if res.returncode != 0:
        return  # no table (or no nft: the iptables driver)
    try:
        items = json.loads(res.stdout).get("nftables", [])
    except ValueError:
        return
    if not any("rule" in it for it in items):
        rt.run(["nft", "delete", "table", FW_FAMILY, FW_TABLE], check=False)


@dataclass(frozen=True)
class RootfulRuntime:
    paths: StatePaths
    settings: Settings
    created: bool = False
    rootless: bool = False
    world_id: None = None  # the host's network namespace does not die under its sandboxes

    @property
    def ports(self) -> KernelPorts:
        return KernelPorts()

    def run(
        self, cmd: Sequence[str], *, input: str | None = None, check: bool = True,
        timeout: float = 60, what: str | None = None, env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        full = dict(os.environ)
        full["PATH"] = f"{Path(sys.executable).parent}:{full.get('PATH', '')}:{SBIN_PATH}"
        full["BURROW_NFT_TABLE"] = FW_TABLE
        full.update(env or {})
        res = subprocess.run(list(cmd), input=input, capture_output=True, text=True, env=full,
                             timeout=timeout, stdin=None if input is not None else
                             subprocess.DEVNULL)
        if check and res.returncode != 0:
            detail = res.stderr.strip() or res.stdout.strip() or f"exit code {res.returncode}"
            raise BurrowError(f"{what or cmd[0]}: {detail}")
        return res

    def netns_path(self, name: str) -> str:
        return str(self.paths.netns_dir / name)

    def create_netns(self, name: str) -> str:
        path = self.netns_path(name)
        # The path as "$1", never in the script's text (a quote in BURROW_STATE_DIR ran as
        # a command).
        self.run(["sh", "-c", 'touch "$1" && unshare --net="$1" true', "sh", path],
                 what=f"create sandbox {name}")
        return path

    def destroy_netns(self, path: str) -> list[str]:
        try:
            inode: int | None = _netns_inode(path)
        except OSError:
            inode = None
        # What still runs in the sandbox (`burrow exec`) would keep its namespace alive.
        if inode is not None and inode != _netns_inode():
            stop_all([r for r in map(ProcRef.of, pids_in_netns(inode)) if r is not None], 1.0)
        errors = []
        if os.path.ismount(path):
            res = self.run(["umount", path], check=False)
            if res.returncode:
                errors.append(f"umount {path}: {res.stderr.strip()}")
        if not errors:
            remove(Path(path))
        return errors

    def exec_prefix(self, name: str) -> list[str]:
        return ["nsenter", f"--net={self.paths.netns_dir / name}", "--"]

    def default_dns(self) -> list[str]:
        return host_servers(skip_loopback=True)

    # Kernel DNAT rules live as long as the host: no port daemon to watch.
    def missing_ports(self, recs: Sequence[SandboxRecord]) -> list[str]:
        return []

    def restore_ports(self, recs: Sequence[SandboxRecord]) -> list[str]:
        return []

    def dns_alive(self) -> bool:
        return dnswatch.alive_in("/proc", dnswatch.recorded_pid(self.paths))

    def restore_dns(self) -> list[str]:
        return dnswatch.restart(self, self.dns_alive)


@dataclass(frozen=True)
class RootfulWorld:
    paths: StatePaths
    settings: Settings
    mode: str = "rootful"
    network_mtu: int | None = None  # the host's links decide, as with Podman

    @property
    def marker(self) -> Path:
        return self.paths.root / "rootful.json"

    def _owner(self) -> int | None:
        data = read_json(self.marker)
        ino = data.get("netns_inode") if data else None
        return ino if isinstance(ino, int) else None

    def ensure(self) -> RootfulRuntime:
        self.paths.ensure()
        mine = _netns_inode()
        if self._owner() == mine:
            return RootfulRuntime(self.paths, self.settings)
        with locked(self.paths.lock, what="the rootful state"):
            owner = self._owner()
            if owner == mine:
                return RootfulRuntime(self.paths, self.settings)
            if owner is not None and any(self.paths.sandboxes_dir.glob("*.json")):
                raise BurrowError(
                    f"state directory {self.paths.root} belongs to another network namespace "
                    f"(inode {owner}, this one is {mine}); run `burrow down` there, or set "
                    "BURROW_STATE_DIR to a directory of its own")
            write_json(self.marker, {"netns_inode": mine, "created": time.time()})
            return RootfulRuntime(self.paths, self.settings, created=True)

    def current(self) -> RootfulRuntime | None:
        return RootfulRuntime(self.paths, self.settings) if self._owner() == _netns_inode() else None

    def teardown(self) -> bool:
        if not self.paths.root.exists() or self._owner() is None:
            return False
        from rootless.engine_call import teardown_sandbox
        from rootless.store import Store

        rt = RootfulRuntime(self.paths, self.settings)
        store = Store(self.paths)
        errors: list[str] = []
        with locked(self.paths.lock, what="the rootful state"):
            for name, rec in store.sandboxes().items():
                errs = teardown_sandbox(rt, rec, store)
                if errs:
                    errors.append(f"sandbox {name}: {'; '.join(errs)}")
                else:
                    store.delete_sandbox(name)
            # burrow-dns exits once its last network goes; the warm engine would idle out.
            stop_all(_engine_pids(self.paths.netavark_config), 1.0)
            if errors:
                raise BurrowError("burrow down: " + " | ".join(errors) +
                                  "; fix that and run `burrow down` again")
            _drop_empty_table(rt)
            for f in self.paths.sandboxes_dir.glob("*"):
                remove(f)
            shutil.rmtree(self.paths.netavark_config, ignore_errors=True)
            self.paths.netavark_config.mkdir(mode=0o700, exist_ok=True)
            remove(self.marker)
        return True

    def up_message(self, rt: Runtime) -> str:
        made = " (created)" if isinstance(rt, RootfulRuntime) and rt.created else ""
        return f"rootful: host network namespace (inode {_netns_inode()}), kernel DNAT{made}"

    def status(self) -> dict[str, Any]:
        info: dict[str, Any] = {"namespace": None, "connector": None, "dns": None,
                                "forwarder": None, "ports": "kernel DNAT (nftables)"}
        owner = self._owner()
        if owner is None:
            return info
        info["namespace"] = {"kind": "host", "netns_inode": owner,
                             "current": owner == _netns_inode()}
        rt = RootfulRuntime(self.paths, self.settings)
        alive = rt.dns_alive()
        if alive:
            info["dns"] = {"pid": dnswatch.recorded_pid(self.paths)}
        info["problems"] = dnswatch.problem(self.paths, alive)
        return info

    def status_lines(self, info: dict[str, Any]) -> list[str]:
        ns, d = info["namespace"], info["dns"]
        return [f"namespace:  {'host netns, inode ' + str(ns['netns_inode']) if ns else '-'}",
                "connector:  - (none: the host network namespace itself)",
                f"dns:        {'burrow-dns pid ' + str(d['pid']) if d else '-'}",
                f"ports:      {info['ports']}"]
