"""Bring a world back to what its records say: `burrow up` after a crash.

- a sandbox whose `sandbox create` died half-way (record still `creating`, its creator gone)
  is torn down and dropped, saying so: a failed create leaves nothing behind;
- a sandbox lost with a dead world is made again in the new one: same name, id, addresses,
  aliases and ports;
- every recorded published port is forwarded (a new forwarder gets all of them, not only the
  ports of the command that started it), and burrow-dns runs if some network has DNS.
"""

from __future__ import annotations

import os

from rootless.backend import Runtime
from rootless.engine_call import netavark, options, teardown_sandbox
from rootless.procs import ProcRef
from rootless.records import CREATING, LOST, RESTORING, RUNNING, SandboxRecord
from rootless.status import sandbox_state
from rootless.store import Store


def converge(rt: Runtime, store: Store) -> list[str]:
    """Repair what can be repaired; returns one line per thing done (or that failed)."""
    done: list[str] = []
    with store.lock():
        live: list[SandboxRecord] = []
        for rec in store.sandboxes().values():
            state = sandbox_state(rec, rt)
            if state == CREATING:
                if rec.creator is None or not rec.creator.alive():
                    done.append(_drop_half_made(rt, rec, store))
            elif state == LOST:
                if rec.world is not None and rec.world == rt.world_id:
                    teardown_sandbox(rt, rec, store)  # an earlier restore died half-way
                restored = _restore(rt, rec, store, done)
                if restored is not None:
                    live.append(restored)
            else:
                live.append(rec)
        done += _rewrite_etc_files(rt, store, live)
        done += rt.restore_ports(live)
        done += rt.restore_dns()
    return done


def _rewrite_etc_files(rt: Runtime, store: Store, live: list[SandboxRecord]) -> list[str]:
    """A command killed while it wrote a running sandbox's resolv.conf or hosts left the file
    empty, and nothing else writes it again while the sandbox runs: names would not resolve
    in it (glibc falls back to 127.0.0.1) with `burrow status` clean."""
    from rootless.sandbox import etc_files_cut, write_resolv

    done = []
    for rec in live:
        if rec.state == RUNNING and etc_files_cut(store, rec):
            write_resolv(store, rec, rt)
            done.append(f"wrote resolv.conf and hosts of sandbox {rec.name} again")
    return done


def _drop_half_made(rt: Runtime, rec: SandboxRecord, store: Store) -> str:
    # Only what exists in this world can be undone; the rest died with its world.
    if rec.world is None or rec.world == rt.world_id:
        teardown_sandbox(rt, rec, store)  # best effort: the create may have stopped anywhere
    store.delete_sandbox(rec.name)
    return f"removed sandbox {rec.name}: its `sandbox create` died before it finished"


def _restore(rt: Runtime, rec: SandboxRecord, store: Store, done: list[str]
             ) -> SandboxRecord | None:
    from rootless.sandbox import write_resolv

    # Recorded first: if this command dies half-way, the next `burrow up` knows what of it
    # exists in this world, tears that down and restores again.
    moved = rec.replace(netns=rt.netns_path(rec.name), world=rt.world_id, state=RESTORING,
                        creator=ProcRef.of(os.getpid()))
    store.save_sandbox(moved)
    try:
        rt.create_netns(rec.name)
        status = netavark(rt, "setup", moved.netns or "", options(rt, moved, store))
    except Exception as e:  # one sandbox that cannot be restored does not stop the others
        teardown_sandbox(rt, moved, store)
        store.save_sandbox(rec)
        done.append(f"could not re-create sandbox {rec.name}: {e}")
        return None
    new = moved.replace(status=status, state=RUNNING, creator=None)
    store.save_sandbox(new)
    write_resolv(store, new, rt)
    done.append(f"re-created sandbox {rec.name} (lost with its namespace)")
    return new
