"""`burrow sandbox ...` and `burrow exec`."""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated

import typer

from rootless.cli.core import FormatOpt, app, ctx, emit, sandbox_app


@sandbox_app.command("create")
def sandbox_create(
    c: typer.Context,
    name: str,
    network: Annotated[list[str] | None, typer.Option(
        "--network", "--net", help="NET[:ip=..,ip6=..,mac=..,alias=..]; repeatable "
        "(default: the dual-stack network `burrow`)")] = None,
    publish: Annotated[list[str] | None, typer.Option(
        "-p", "--publish", help="[IP:]HOST[-END]:CTR[-END][/tcp|udp]; repeatable")] = None,
    dns: Annotated[list[str] | None, typer.Option("--dns", help="extra DNS server")] = None,
) -> None:
    """Create a sandbox (a network namespace) attached to networks."""
    from rootless import sandbox
    from rootless.ports.spec import PortSpec

    cx = ctx(c)
    attaches = [sandbox.Attach.parse(n) for n in network or []]
    ports = [p for spec in publish or [] for p in PortSpec.parse(spec)]
    rec = sandbox.create(cx.world, name, attaches, ports, dns or [], cx.world.network_mtu)
    print(f"{name} {' '.join(rec.ips)}")


@sandbox_app.command("ls")
def sandbox_ls(c: typer.Context, fmt: FormatOpt = "table") -> None:
    """List sandboxes. A sandbox whose namespace died is `lost` until `burrow up`."""
    from rootless.status import sandbox_state
    from rootless.store import Store

    w = ctx(c).world
    rt = w.current()
    rows = [{"name": r.name, "networks": list(r.network_names), "ips": r.ips,
             "ports": [str(p) for p in r.ports], "state": sandbox_state(r, rt)}
            for r in Store(w.paths).sandboxes().values()]
    emit(rows, fmt, ["name", "networks", "ips", "ports", "state"])
    if any(r["state"] == "lost" for r in rows) and fmt == "table":
        print("lost: its namespace died; `burrow up` re-creates it", file=sys.stderr)


@sandbox_app.command("inspect")
def sandbox_inspect(c: typer.Context, name: str) -> None:
    """Everything burrow knows about a sandbox, as JSON."""
    from rootless.store import Store

    print(json.dumps(Store(ctx(c).paths).sandbox(name).to_json(), indent=2))


@sandbox_app.command("rm")
def sandbox_rm(c: typer.Context, names: list[str]) -> None:
    """Remove sandboxes; removing the last one stops the namespace."""
    from rootless import sandbox

    for n in names:
        stopped = sandbox.remove(ctx(c).world, n)
        print(n + (" (last sandbox: namespace stopped)" if stopped else ""))


@app.command("exec", context_settings={"allow_extra_args": True,
                                       "ignore_unknown_options": True})
def exec_(c: typer.Context, name: str, cmd: Annotated[list[str], typer.Argument()]) -> None:
    """Run CMD inside a sandbox: `burrow exec NAME -- CMD...`."""
    from rootless import sandbox

    argv = sandbox.exec_argv(ctx(c).world, name, cmd)
    env = dict(os.environ)
    env["PATH"] = env.get("PATH", "") + ":/usr/sbin:/sbin"
    sys.stdout.flush()
    os.execvpe(argv[0], argv, env)
