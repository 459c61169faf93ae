"""`burrow status` and each sandbox's state: what runs in the world, and what is broken."""

from __future__ import annotations

from typing import Any

from rootless.backend import Runtime, World
from rootless.records import CREATING, LOST, RESTORING, RUNNING, SandboxRecord
from rootless.store import Store


def sandbox_state(rec: SandboxRecord, rt: Runtime | None) -> str:
    """`running`, `creating`, `restoring` (by a live `burrow up`), or `lost`: made in a world
    that has died since, or its restore died half-way."""
    if rec.state == CREATING:
        return CREATING
    if rec.state == RESTORING:
        return RESTORING if rec.creator is not None and rec.creator.alive() else LOST
    if rec.world is not None and (rt is None or rt.world_id != rec.world):
        return LOST
    return rec.state


def collect(w: World) -> dict[str, Any]:
    info: dict[str, Any] = {"mode": w.mode, "state_dir": str(w.paths.root), **w.status()}
    problems: list[str] = info.setdefault("problems", [])
    rt = w.current()
    recs = Store(w.paths).sandboxes()
    states = {n: sandbox_state(r, rt) for n, r in recs.items()}
    info["sandboxes"] = sorted(recs)
    info["sandbox_states"] = states
    lost = sorted(n for n, s in states.items() if s == LOST)
    if lost:
        problems.append(f"sandbox(es) {', '.join(lost)} lost with the namespace they lived in; "
                        "run `burrow up` to re-create them (`burrow sandbox rm` to drop them)")
    note = _client_address_note(info.get("forwarder"))
    if note:
        info.setdefault("notes", []).append(note)
    if rt is not None:
        missing = rt.missing_ports([r for n, r in recs.items() if states[n] == RUNNING])
        if missing:
            problems.append(f"published ports of {', '.join(missing)} are not forwarded (the "
                            "port forwarder died); run `burrow up` to publish them again")
    return info


def _client_address_note(fwd: Any) -> str | None:
    """Where the forwarder could not keep client addresses (rootless.ports.clientaddr). The
    user netns's reply routing serves UDP; TCP needs it only where the sandbox's own part
    (`inside_unavailable`) failed too."""
    ca = fwd.get("client_address") if isinstance(fwd, dict) else None
    gone = ca.get("unavailable") if isinstance(ca, dict) else None
    if not isinstance(gone, list) or not gone:
        return None
    gone = [u for u in gone if isinstance(u, dict)]
    inside = ca.get("inside_unavailable") if isinstance(ca, dict) else None
    inside_fams = {u.get("family") for u in inside or [] if isinstance(u, dict)}
    protos = "TCP and UDP" if inside_fams & {u.get("family") for u in gone} else "UDP"
    fams = "/".join(sorted({f"IPv{u.get('family')}" for u in gone}))
    why = "; ".join(sorted({str(u.get("reason")) for u in gone}))
    return (f"client addresses are not kept for {protos} over {fams} ({why}): sandboxes see "
            "their own address as the peer of those published ports")


def render(w: World, info: dict[str, Any]) -> str:
    states = info.get("sandbox_states", {})
    shown = [n + ("" if states.get(n) in (None, "running") else f" ({states[n]})")
             for n in info["sandboxes"]]
    lines = [f"mode:       {info['mode']}", f"state:      {info['state_dir']}",
             *w.status_lines(info), f"sandboxes:  {', '.join(shown) or '-'}"]
    lines += [f"note:       {n}" for n in info.get("notes", [])]
    if info.get("namespace") is None and not info["sandboxes"] and not info.get("problems"):
        # A new user's first `burrow status`: say what starts it rather than a column of dashes.
        lines.append("note:       nothing runs; `burrow sandbox create NAME` (or `burrow up`) "
                     "starts it, `burrow demo` tries it out and cleans up")
    lines += [f"PROBLEM:    {p}" for p in info.get("problems", [])]
    return "\n".join(lines)
