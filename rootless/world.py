"""The per-user "world": the namespace holder plus its connector, created on demand, once.

`ensure()` takes the state lock, repairs a stale world (dead holder, leftover sockets, orphaned
connector or forwarder), and creates a new one if needed; two commands racing here end up
sharing one namespace. `teardown()` removes everything the world owns.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from netns.errors import BurrowError
from rootless import connectors, userns
from rootless.connectors import ConnectorInfo
from rootless.paths import StatePaths, locked, read_json, remove, write_json
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


def require(paths: StatePaths) -> World:
    w = current(paths)
    if w is None:
        raise BurrowError("no burrow namespace is running; create a sandbox first "
                          "(`burrow sandbox create NAME`)")
    return w
