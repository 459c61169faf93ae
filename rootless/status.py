"""`burrow status`: what is running in the user's world, read from state and /proc."""

from __future__ import annotations

from typing import Any

from rootless import world
from rootless.paths import StatePaths, read_json
from rootless.procs import ProcRef


def collect(paths: StatePaths) -> dict[str, Any]:
    w = world.current(paths)
    info: dict[str, Any] = {"state_dir": str(paths.root), "namespace": None, "connector": None,
                            "dns": None, "forwarder": None, "sandboxes": []}
    if w is None:
        return info
    info["namespace"] = {"holder_pid": w.holder.pid, "netns": w.holder.netns_path}
    if w.connector:
        c = w.connector
        info["connector"] = {"kind": c.kind, "pid": c.proc.pid, "alive": c.proc.alive(),
                             "interface": c.interface, "host_loopback": c.host_loopback,
                             "host_v4": c.host_v4, "host_v6": c.host_v6}
    pidfile = paths.netavark_config / "aardvark-dns" / "aardvark.pid"
    try:
        dpid = int(pidfile.read_text().strip())
        info["dns"] = {"pid_in_namespace": dpid}
    except (FileNotFoundError, ValueError):
        pass
    fwd = read_json(paths.forwarder)
    ref = ProcRef.from_json(fwd.get("proc") if fwd else None)
    if ref is not None and ref.alive():
        info["forwarder"] = {"pid": ref.pid, "socket": str(paths.forwarder_socket)}
    if paths.sandboxes_dir.exists():
        info["sandboxes"] = sorted(p.stem for p in paths.sandboxes_dir.glob("*.json"))
    return info


def render(info: dict[str, Any]) -> str:
    lines = [f"state:      {info['state_dir']}"]
    ns = info["namespace"]
    lines.append(f"namespace:  {'holder pid ' + str(ns['holder_pid']) if ns else 'not running'}")
    c = info["connector"]
    if c:
        loop = "open" if c["host_loopback"] else "closed"
        lines.append(f"connector:  {c['kind']} pid {c['pid']} ({'up' if c['alive'] else 'DEAD'}), "
                     f"{c['interface']}, host loopback {loop}")
    else:
        lines.append("connector:  -")
    d = info["dns"]
    lines.append(f"dns:        {'burrow-dns pid ' + str(d['pid_in_namespace']) + ' (in ns)' if d else '-'}")
    f = info["forwarder"]
    lines.append(f"forwarder:  {'pid ' + str(f['pid']) if f else '-'}")
    lines.append(f"sandboxes:  {', '.join(info['sandboxes']) or '-'}")
    return "\n".join(lines)
