"""The per-user "world": the namespace holder plus its connector, created on demand, once.

`ensure()` takes the state lock, repairs a stale world (dead holder, leftover sockets, orphaned
connector or forwarder), and creates a new one if needed; two commands racing here end up
sharing one namespace. A repair brings back the world it replaces: the same connector kind and
host-loopback setting, read from the world's record. Sandbox records are never dropped by a
repair: sandboxes of a dead world are *lost* until `burrow up` re-creates them
(`rootless.recover`). `teardown()` removes everything the world owns.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from netns.errors import BurrowError
from rootless import connectors, dnswatch, userns
from rootless.backend import Runtime
from rootless.connectors import ConnectorInfo
from rootless.hostdns import host_servers
from rootless.paths import StatePaths, locked, read_json, remove, write_json
from rootless.ports import control, messages
from rootless.ports.userspace import ForwarderPorts
from rootless.procs import ProcRef
from rootless.records import SandboxRecord, WorldRecord
from rootless.settings import Settings
from rootless.userns import Holder


@dataclass(frozen=True)
class WorldOptions:
    connector: str | None = None      # None: whichever is installed, slirp4netns first
    host_loopback: bool = False


def recorded_connector(paths: StatePaths) -> ConnectorInfo | None:
    return ConnectorInfo.from_json(read_json(paths.connector))


@dataclass(frozen=True)
class RootlessRuntime:
    """A running per-user namespace: commands run in it through `nsenter` into the holder."""
    holder: Holder
    connector: ConnectorInfo | None
    settings: Settings
    created: bool = False
    rootless: bool = True

    @property
    def paths(self) -> StatePaths:
        return self.holder.paths

    @property
    def world_id(self) -> ProcRef:
        return self.holder.proc

    @property
    def ports(self) -> ForwarderPorts:
        return ForwarderPorts(self.holder)

    def run(
        self, cmd: Sequence[str], *, input: str | None = None, check: bool = True,
        timeout: float = 60, what: str | None = None, env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return self.holder.run(cmd, input=input, check=check, timeout=timeout, what=what,
                               env=env)

    def netns_path(self, name: str) -> str:
        return self.holder.sandbox_netns(name)

    def create_netns(self, name: str) -> str:
        path = self.netns_path(name)
        # The path as "$1", never in the script's text: a quote in the state dir's name ran
        # the rest of it as a command.
        self.holder.run(["sh", "-c", 'touch "$1" && unshare --net="$1" true', "sh", path],
                        what=f"create sandbox {name}")
        return path

    def destroy_netns(self, path: str) -> list[str]:
        # Processes in it belong to the holder's PID namespace and go with the world.
        res = self.holder.run(["sh", "-c", 'umount "$1"; rm -f "$1"', "sh", path], check=False)
        return [res.stderr.strip()] if res.returncode else []

    def exec_prefix(self, name: str) -> list[str]:
        # The holder's user, mount and PID namespaces, and the sandbox's netns opened from the
        # host side through /proc/H/root (it lives on the holder's private tmpfs).
        return ["nsenter", "--preserve-credentials", "-U", "-m", "-p", "-t",
                str(self.holder.pid), f"--net={self.holder.sandbox_netns_outside(name)}", "--"]

    def default_dns(self) -> list[str]:
        kind = self.connector.kind if self.connector else ""
        return ["10.0.2.3"] if kind == "slirp4netns" else host_servers()

    def missing_ports(self, recs: Sequence[SandboxRecord]) -> list[str]:
        want = [r.name for r in recs if r.ports and r.netns]
        if not want:
            return []
        if control.running(self.paths) is None:
            return want
        try:
            reply = control.request(self.paths, messages.ListPorts(), timeout=5)
        except (BurrowError, OSError, ValueError):
            return []  # alive but not answering now (busy, out of fds): it may well serve them
        have = {str(p.get("sandbox")) for p in reply.get("ports", []) if isinstance(p, dict)}
        return [n for n in want if n not in have]

    def restore_ports(self, recs: Sequence[SandboxRecord]) -> list[str]:
        by_name = {r.name: r for r in recs}
        done = []
        for name in self.missing_ports(recs):
            # The first publish starts a new forwarder if the old one died.
            self.ports.publish(by_name[name].to_json())
            done.append(f"published the ports of sandbox {name} again")
        return done

    def dns_alive(self) -> bool:
        # The pid file holds a pid of the holder's PID namespace: look in its own procfs.
        return dnswatch.alive_in(f"/proc/{self.holder.pid}/root/proc",
                                 dnswatch.recorded_pid(self.paths))

    def restore_dns(self) -> list[str]:
        return dnswatch.restart(self, self.dns_alive)


def current(paths: StatePaths, settings: Settings) -> RootlessRuntime | None:
    """The running world, without creating or repairing anything."""
    holder = userns.find(paths)
    if holder is None:
        return None
    return RootlessRuntime(holder, recorded_connector(paths), settings)


def ensure(paths: StatePaths, opts: WorldOptions, settings: Settings) -> RootlessRuntime:
    paths.ensure()
    existing = current(paths, settings)
    if existing is not None and existing.connector and existing.connector.proc.alive():
        return existing  # fast path: no lock when everything is up
    with locked(paths.lock, what="the user namespace"):
        holder = userns.find(paths)
        conn = recorded_connector(paths)
        if holder is not None and conn is not None and conn.proc.alive():
            return RootlessRuntime(holder, conn, settings)
        # What the world was made with wins over this command's flags: a repair brings back
        # the same world (a pasta world is not repaired with slirp4netns).
        made = WorldRecord.from_json(read_json(paths.holder))
        if made is not None and made.connector is not None:
            opts = WorldOptions(made.connector, made.host_loopback)
        with ExitStack() as undo:
            created = holder is None
            if holder is None:
                repair(paths)
                holder = userns.create(paths)
                undo.callback(userns.destroy, holder)
            elif conn is not None:
                conn.stop()  # a live namespace whose connector died (OOM, killed)
            conn = connectors.select(opts.connector).start(
                holder, host_loopback=opts.host_loopback, timeout=10.0)
            undo.pop_all()
        write_json(paths.connector, conn.to_json())
        rec = WorldRecord.from_json(read_json(paths.holder)) or WorldRecord(holder.proc)
        write_json(paths.holder, dataclasses.replace(
            rec, connector=conn.kind, host_loopback=opts.host_loopback).to_json())
        return RootlessRuntime(holder, conn, settings, created)


def _stop_recorded(paths: StatePaths) -> None:
    conn = recorded_connector(paths)
    if conn is not None:
        conn.stop()
    control.stop(paths)


def _forget(paths: StatePaths) -> None:
    """Drop the world's own state. Sandbox records stay: they are the user's."""
    for p in (paths.connector, paths.forwarder, paths.holder, paths.slirp_socket,
              paths.pasta_pid, paths.forwarder_socket):
        remove(p)
    # DNS records and engine state belonged to the namespace; a restore writes them again.
    if paths.netavark_config.exists():
        shutil.rmtree(paths.netavark_config, ignore_errors=True)
        paths.netavark_config.mkdir(mode=0o700, exist_ok=True)


def repair(paths: StatePaths) -> bool:
    """Clean up after a world whose holder is gone. Caller holds the lock. True if it did."""
    if userns.find(paths) is not None:
        return False
    stale = userns.reap_pending(paths)
    stale = any(p.exists() for p in (paths.holder, paths.connector, paths.forwarder,
                                     paths.slirp_socket, paths.forwarder_socket)) or stale
    if stale:
        _stop_recorded(paths)
        _forget(paths)
    return stale


def teardown(paths: StatePaths) -> bool:
    """Stop everything and forget every sandbox. True if there was a world to stop."""
    if not paths.root.exists():
        return False
    with locked(paths.lock, what="the user namespace"):
        holder = userns.find(paths)
        _stop_recorded(paths)
        userns.reap_pending(paths)
        if holder is not None:
            userns.destroy(holder)
        _forget(paths)
        if paths.sandboxes_dir.exists():
            for f in paths.sandboxes_dir.iterdir():
                remove(f)
        return holder is not None


# -- the rootless implementation of rootless.backend.World ----------------------------------
@dataclass(frozen=True)
class RootlessWorld:
    paths: StatePaths
    opts: WorldOptions
    settings: Settings
    mode: str = "rootless"

    @property
    def network_mtu(self) -> int | None:
        from rootless.connectors.base import CONNECTOR_MTU

        return CONNECTOR_MTU  # bridges behind a connector use its tap MTU

    def ensure(self) -> RootlessRuntime:
        return ensure(self.paths, self.opts, self.settings)

    def current(self) -> RootlessRuntime | None:
        return current(self.paths, self.settings)

    def teardown(self) -> bool:
        return teardown(self.paths)

    def up_message(self, rt: Runtime) -> str:
        assert isinstance(rt, RootlessRuntime)
        conn = rt.connector
        return (f"namespace holder {rt.holder.pid}, connector {conn.kind if conn else '-'}"
                f"{' (created)' if rt.created else ''}")

    def status(self) -> dict[str, Any]:
        from rootless import health

        return health.rootless_status(self.paths, self.current())

    def status_lines(self, info: dict[str, Any]) -> list[str]:
        from rootless import health

        return health.rootless_lines(info)
