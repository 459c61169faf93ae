"""`burrow up -f FILE` and `burrow down -f FILE`: apply a declared topology (rootless.topology).

`up` reads and checks the whole file and plans against what exists before it changes anything;
what exists as declared is left alone (a second `up` changes nothing and says so), a declared
command no longer running is started again, and a failure half-way removes what this `up` made.
`down` removes the file's sandboxes (stopping what runs in them) and networks that exist, goes
on past a failure, and exits 1 naming what it could not remove; with no sandbox left, the
namespace stops too, as after the last `burrow sandbox rm`.
"""

from __future__ import annotations

import os
import subprocess
from contextlib import ExitStack
from pathlib import Path

from netns.errors import BurrowError
from rootless import sandbox, topology
from rootless.backend import World
from rootless.ports.spec import PortSpec
from rootless.store import Store


def start_command(w: World, box: topology.SandboxDecl) -> int:
    """Start the sandbox's command detached, output to its log; its pid (outside)."""
    argv = sandbox.exec_argv(w, box.name, list(box.command))
    log = w.paths.command_log(box.name)
    env = dict(os.environ)
    env["PATH"] = env.get("PATH", "") + ":/usr/sbin:/sbin"
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                                start_new_session=True, cwd="/")
    return proc.pid


def _repair_lost(w: World, store: Store, topo: topology.Topology) -> None:
    """Sandboxes of the file lost with a dead namespace come back first (what `burrow up`
    does), so the plan sees them as they are and restarts their commands."""
    from rootless.records import LOST
    from rootless.recover import converge
    from rootless.status import sandbox_state

    declared = {b.name for b in topo.sandboxes}
    rt = w.current()
    if any(sandbox_state(r, rt) == LOST for n, r in store.sandboxes().items() if n in declared):
        for line in converge(w.ensure(), store):
            print(line)


def up_file(w: World, path: Path) -> int:
    topo = topology.load(path)
    store = Store(w.paths)
    _repair_lost(w, store, topo)
    with store.lock():
        existing = {n: list(r.network_names) for n, r in store.sandboxes().items()}
        p = topology.plan(topo, store.networks(), existing,
                          lambda n: bool(sandbox.sandbox_pids(w, n)), w.network_mtu,
                          rootless=w.mode == "rootless")
    if p.empty:
        print(f"nothing to change: {len(p.unchanged)} object(s) as declared in {path} "
              f"({', '.join(p.unchanged)})")
        return 0
    with ExitStack() as undo:
        for net in p.networks:
            with store.lock():
                if net["name"] in store.networks():
                    raise BurrowError(f"network {net['name']} was created meanwhile; run "
                                      f"`burrow up -f {path}` again")
                store.save_network(net)
            undo.callback(store.delete_network, net["name"])
            print(f"created network {net['name']}")
        for box in p.sandboxes:
            _create(w, box)
            undo.callback(_remove, w, box.name)
            print(f"created sandbox {box.name}")
        for box in p.sandboxes + p.restart:
            if box.command:
                pid = start_command(w, box)
                print(f"started `{' '.join(box.command)}` in {box.name} (pid {pid}, log "
                      f"{w.paths.command_log(box.name)})")
        undo.pop_all()
    for what in p.unchanged:
        print(f"unchanged: {what}")
    return 0


def _create(w: World, box: topology.SandboxDecl) -> None:
    attaches = [sandbox.Attach.parse(s) for s in box.networks]
    ports = [q for spec in box.ports for q in PortSpec.parse(spec)]
    sandbox.create(w, box.name, attaches, ports, list(box.dns), w.network_mtu)


def _remove(w: World, name: str) -> None:
    sandbox.remove(w, name, last_stops_world=False)  # stops what runs in it first


def down_file(w: World, path: Path) -> int:
    topo = topology.load(path)
    store = Store(w.paths)
    failed: list[str] = []
    removed = 0
    have = store.sandboxes()
    for box in reversed(topo.sandboxes):
        if box.name not in have:
            continue
        try:
            _remove(w, box.name)
            removed += 1
            print(f"removed sandbox {box.name}")
        except BurrowError as e:
            failed.append(f"sandbox {box.name}: {e}")
    nets = store.networks()
    for decl in reversed(topo.networks):
        name = decl.request.name
        if name not in nets:
            continue
        with store.lock():
            users = store.users_of(name)
            if users:
                failed.append(f"network {name}: still used by sandbox(es) {', '.join(users)} "
                              f"(not declared in {path}); remove them first")
                continue
            store.delete_network(name)
        removed += 1
        print(f"removed network {name}")
    if not store.sandboxes() and w.current() is not None:
        w.teardown()
        print("no sandbox left: namespace stopped")
    if failed:
        raise BurrowError(f"burrow down -f {path}: could not remove: " + " | ".join(failed))
    if not removed:
        print(f"nothing declared in {path} exists: nothing to remove")
    return 0
