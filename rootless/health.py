"""What runs in the per-user world, read from state and /proc, and what is broken.

Every daemon burrow runs for the world (the holder, the connector, burrow-dns, the port
forwarder) is checked; each one that died is a *problem*, named with its fix. `burrow status`
exits non-zero when there is one.
"""

from __future__ import annotations

from typing import Any

from netns.errors import BurrowError
from rootless import dnswatch, userns
from rootless.paths import StatePaths
from rootless.ports import control, messages
from rootless.world import RootlessRuntime, recorded_connector

FIX = "run `burrow up`"


def rootless_status(paths: StatePaths, rt: RootlessRuntime | None) -> dict[str, Any]:
    info: dict[str, Any] = {"namespace": None, "connector": None, "dns": None,
                            "forwarder": None, "problems": []}
    problems: list[str] = info["problems"]
    if rt is None:
        dead = userns.stale_holder(paths)
        if dead is not None:
            problems.append(f"the namespace holder (pid {dead.pid}) died, and the namespace "
                            f"with it; {FIX} to make a new one")
        return info
    info["namespace"] = {"holder_pid": rt.holder.pid, "netns": rt.holder.netns_path}
    c = recorded_connector(paths)
    if c is not None:
        info["connector"] = {"kind": c.kind, "pid": c.proc.pid, "alive": c.proc.alive(),
                             "interface": c.interface, "host_loopback": c.host_loopback,
                             "host_v4": c.host_v4, "host_v6": c.host_v6}
        if not c.proc.alive():
            problems.append(f"the connector ({c.kind}, pid {c.proc.pid}) died: sandboxes have "
                            f"no way out; {FIX} to attach a new one")
    else:
        problems.append(f"the namespace has no connector; {FIX}")
    alive = rt.dns_alive()
    if alive:
        info["dns"] = {"pid_in_namespace": dnswatch.recorded_pid(paths)}
    problems += dnswatch.problem(paths, alive)
    info["forwarder"] = _forwarder(paths)
    return info


def _forwarder(paths: StatePaths) -> dict[str, Any] | None:
    ref = control.running(paths)
    if ref is None:
        return None
    out: dict[str, Any] = {"pid": ref.pid, "socket": str(paths.forwarder_socket)}
    try:
        live = control.request(paths, messages.Ping(), timeout=2)
        out.update({k: v for k, v in live.items() if k not in ("ok", "pid")})
    except (BurrowError, OSError, ValueError):
        pass  # busy or going away: the pid is still worth showing
    return out


def rootless_lines(info: dict[str, Any]) -> list[str]:
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
        shed = f.get("shed") or {}
        capped = sum(int(shed.get(k, 0)) for k in CAP_SHED)
        if capped:
            line += f", {capped} connections or flows shed at the caps"
    return line


# Counters of the forwarder's `shed` (rootless/ports/budget.py) other than for want of fds.
CAP_SHED = ("tcp_refused_per_client", "dial_refused_per_client", "udp_flows_shed_per_client",
            "udp_flows_shed_total", "control_shed")
