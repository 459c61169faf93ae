"""The per-user "world": the namespace holder plus its connector, created on demand, once.

`ensure()` takes the state lock, repairs a stale world (dead holder, leftover sockets, orphaned
connector or forwarder), and creates a new one if needed; two commands racing here end up
sharing one namespace. `teardown()` removes everything the world owns.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from netns import statefiles
from netns.errors import BurrowError
from rootless import connectors, userns
from rootless.backend import Runtime
from rootless.connectors import ConnectorInfo
from rootless.hostdns import host_servers
from rootless.paths import StatePaths, locked, read_json, remove, write_json
from rootless.ports import control
from rootless.ports.userspace import ForwarderPorts
from rootless.procs import ProcRef
from rootless.userns import Holder


@dataclass(frozen=True)
class WorldOptions:
    connector: str | None = None      # None: whichever is installed, slirp4netns first
    host_loopback: bool = False


@dataclass(frozen=True)
class World:
    holder: Holder
    connector: ConnectorInfo | None
    created: bool

    @property
    def paths(self) -> StatePaths:
        return self.holder.paths


def _connector(paths: StatePaths) -> ConnectorInfo | None:
    return ConnectorInfo.from_json(read_json(paths.connector))


def current(paths: StatePaths) -> World | None:
    """The running world, without creating or repairing anything."""
    holder = userns.find(paths)
    if holder is None:
        return None
    return World(holder, _connector(paths), False)


def ensure(paths: StatePaths, opts: WorldOptions) -> World:
    paths.ensure()
    existing = current(paths)
    if existing is not None and existing.connector and existing.connector.proc.alive():
        return existing  # fast path: no lock when everything is up
    with locked(paths.lock, what="the user namespace"):
        holder = userns.find(paths)
        conn = _connector(paths)
        if holder is not None and conn is not None and conn.proc.alive():
            return World(holder, conn, False)
        if holder is None:
            repair(paths)
            holder = userns.create(paths)
            created = True
        else:
            # A live namespace whose connector died (OOM, killed): reattach a new one.
            if conn is not None:
                conn.stop()
            created = False
        try:
            conn = connectors.select(opts.connector).start(
                holder, host_loopback=opts.host_loopback, timeout=10.0)
        except BaseException:
            if created:
                userns.destroy(holder)
            raise
        write_json(paths.connector, conn.to_json())
        return World(holder, conn, created)


def _stop_recorded(paths: StatePaths) -> None:
    conn = _connector(paths)
    if conn is not None:
        conn.stop()
    fwd = read_json(paths.forwarder)
    ref = ProcRef.from_json(fwd.get("proc") if fwd else None)
    if ref is not None:
        ref.stop(grace=1.0)


def _forget(paths: StatePaths, *, everything: bool) -> None:
    for p in (paths.connector, paths.forwarder, paths.holder, paths.slirp_socket,
              paths.pasta_pid, paths.forwarder_socket):
        remove(p)
    # Sandboxes lived in the namespace; DNS records and engine state belonged to it too. A
    # record another command is still creating (its reservation) must survive a repair.
    if paths.sandboxes_dir.exists():
        for f in paths.sandboxes_dir.iterdir():
            rec = read_json(f) if f.suffix == ".json" else None
            creator = ProcRef.from_json(rec.get("creator")) if rec else None
            if everything or rec is None or rec.get("state") != "creating" or \
                    creator is None or not creator.alive():
                remove(f)
    if paths.netavark_config.exists():
        shutil.rmtree(paths.netavark_config, ignore_errors=True)
        paths.netavark_config.mkdir(mode=0o700, exist_ok=True)


def repair(paths: StatePaths) -> bool:
    """Clean up after a world whose holder is gone. Caller holds the lock. True if it did."""
    if userns.find(paths) is not None:
        return False
    stale = any(p.exists() for p in (paths.holder, paths.connector, paths.forwarder,
                                     paths.slirp_socket, paths.forwarder_socket))
    if stale:
        _stop_recorded(paths)
        _forget(paths, everything=False)
    return stale


def teardown(paths: StatePaths) -> bool:
    """Stop everything. True if there was a world to stop."""
    if not paths.root.exists():
        return False
    with locked(paths.lock, what="the user namespace"):
        holder = userns.find(paths)
        _stop_recorded(paths)
        if holder is not None:
            userns.destroy(holder)
        _forget(paths, everything=True)
        return holder is not None


# -- the rootless implementation of rootless.backend.World ----------------------------------
@dataclass(frozen=True)
class RootlessRuntime:
    """A running per-user namespace: commands run in it through `nsenter` into the holder."""
    holder: Holder
    connector: ConnectorInfo | None
    created: bool = False
    rootless: bool = True

    @property
    def paths(self) -> StatePaths:
        return self.holder.paths

    @property
    def ports(self) -> ForwarderPorts:
        return ForwarderPorts(self.holder)

    def run(
        self, cmd: Sequence[str], *, input: str | None = None, check: bool = True,
        timeout: float = 60, what: str | None = None, env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return self.holder.run(cmd, input=input, check=check, timeout=timeout, what=what,
                               env=env)

    def create_netns(self, name: str) -> str:
        path = self.holder.sandbox_netns(name)
        self.holder.run(["sh", "-c", f"touch '{path}' && unshare --net='{path}' true"],
                        what=f"create sandbox {name}")
        return path

    def destroy_netns(self, name: str, path: str) -> list[str]:
        # Processes in it belong to the holder's PID namespace and go with the world.
        res = self.holder.run(["sh", "-c", f"umount '{path}'; rm -f '{path}'"], check=False)
        return [res.stderr.strip()] if res.returncode else []

    def exec_prefix(self, name: str) -> list[str]:
        # The holder's user, mount and PID namespaces, and the sandbox's netns opened from the
        # host side through /proc/H/root (it lives on the holder's private tmpfs).
        return ["nsenter", "--preserve-credentials", "-U", "-m", "-p", "-t",
                str(self.holder.pid), f"--net={self.holder.sandbox_netns_outside(name)}", "--"]

    def default_dns(self) -> list[str]:
        kind = self.connector.kind if self.connector else ""
        return ["10.0.2.3"] if kind == "slirp4netns" else host_servers()


@dataclass(frozen=True)
class RootlessWorld:
    paths: StatePaths
    opts: WorldOptions
    mode: str = "rootless"

    @property
    def network_mtu(self) -> int | None:
        from rootless.connectors.base import CONNECTOR_MTU

        return CONNECTOR_MTU  # bridges behind a connector use its tap MTU

    @staticmethod
    def _runtime(w: World | None) -> RootlessRuntime | None:
        return None if w is None else RootlessRuntime(w.holder, w.connector, w.created)

    def ensure(self) -> RootlessRuntime:
        rt = self._runtime(ensure(self.paths, self.opts))
        assert rt is not None
        return rt

    def current(self) -> RootlessRuntime | None:
        return self._runtime(current(self.paths))

    def teardown(self) -> bool:
        return teardown(self.paths)

    def up_message(self, rt: Runtime) -> str:
        assert isinstance(rt, RootlessRuntime)
        conn = rt.connector
        return (f"namespace holder {rt.holder.pid}, connector {conn.kind if conn else '-'}"
                f"{' (created)' if rt.created else ''}")

    def status(self) -> dict[str, Any]:
        paths = self.paths
        info: dict[str, Any] = {"namespace": None, "connector": None, "dns": None,
                                "forwarder": None}
        w = current(paths)
        if w is None:
            return info
        info["namespace"] = {"holder_pid": w.holder.pid, "netns": w.holder.netns_path}
        if w.connector:
            c = w.connector
            info["connector"] = {"kind": c.kind, "pid": c.proc.pid, "alive": c.proc.alive(),
                                 "interface": c.interface, "host_loopback": c.host_loopback,
                                 "host_v4": c.host_v4, "host_v6": c.host_v6}
        pidfile = paths.netavark_config / statefiles.AARDVARK_DIR / statefiles.AARDVARK_PID
        try:
            info["dns"] = {"pid_in_namespace": int(pidfile.read_text().strip())}
        except (FileNotFoundError, ValueError):
            pass
        fwd = read_json(paths.forwarder)
        ref = ProcRef.from_json(fwd.get("proc") if fwd else None)
        if ref is not None and ref.alive():
            info["forwarder"] = {"pid": ref.pid, "socket": str(paths.forwarder_socket)}
            try:
                live = control.request(paths, {"op": "ping"}, timeout=2)
                info["forwarder"].update({k: v for k, v in live.items() if k not in ("ok", "pid")})
            except (BurrowError, OSError, ValueError):
                pass  # busy or going away: the pid is still worth showing
        return info

    def status_lines(self, info: dict[str, Any]) -> list[str]:
        ns, c, d, f = info["namespace"], info["connector"], info["dns"], info["forwarder"]
        lines = [f"namespace:  {'holder pid ' + str(ns['holder_pid']) if ns else 'not running'}"]
        if c:
            loop = "open" if c["host_loopback"] else "closed"
            lines.append(f"connector:  {c['kind']} pid {c['pid']} "
                         f"({'up' if c['alive'] else 'DEAD'}), {c['interface']}, "
                         f"host loopback {loop}")
        else:
            lines.append("connector:  -")
        lines.append("dns:        " + (f"burrow-dns pid {d['pid_in_namespace']} (in ns)" if d
                                       else "-"))
        lines.append(f"forwarder:  {_forwarder_line(f) if f else '-'}")
        return lines


def _forwarder_line(f: dict[str, Any]) -> str:
    line = f"pid {f['pid']}"
    if "tcp_connections" in f:
        line += (f", {f['tcp_connections']} TCP connections, {f['udp_flows']} UDP flows, "
                 f"fd limit {f['fd_limit']}")
        if f.get("refused_out_of_fds"):
            line += (f", {f['refused_out_of_fds']} clients refused for want of fds (see "
                     "log/forwarder.log)")
    return line
