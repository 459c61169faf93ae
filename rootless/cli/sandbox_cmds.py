"""`burrow sandbox ...` and `burrow exec`."""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated

import typer

from rootless.cli.core import FormatOpt, NoHeadingOpt, QuietOpt, app, ctx, emit, sandbox_app
from rootless.cli.output import each

ListOpt = list[str] | None


@sandbox_app.command("create")
def sandbox_create(
    c: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME")],
    network: Annotated[ListOpt, typer.Option(
        "--network", "--net", metavar="NET[:OPTS]",
        help="NET[:ip=..,ip6=..,mac=..,alias=..,interface_name=..] (ip= once per family), "
        "or none; repeatable (default: the dual-stack network `burrow`)")] = None,
    publish: Annotated[ListOpt, typer.Option(
        "-p", "--publish", metavar="SPEC",
        help="[[IP:][HOST[-END]]:]CTR[-END][/tcp|udp][,no-client-addr|,client-port]; no "
        "HOST: a free one is chosen (see `burrow port ls`); the sandbox sees the client's "
        "address (no-client-addr: its own; client-port: the client's port too, tcp); "
        "repeatable")] = None,
    dns: Annotated[ListOpt, typer.Option("--dns", metavar="IP", help="extra DNS server")] = None,
    network_alias: Annotated[ListOpt, typer.Option(
        "--network-alias", metavar="NAME",
        help="another name the sandbox answers to, on every network; repeatable")] = None,
    dns_search: Annotated[ListOpt, typer.Option(
        "--dns-search", metavar="DOMAIN",
        help="search domain for resolv.conf, after dns.podman ('.': no search line)")] = None,
    dns_option: Annotated[ListOpt, typer.Option(
        "--dns-option", metavar="OPT", help="resolv.conf option, e.g. ndots:2")] = None,
    add_host: Annotated[ListOpt, typer.Option(
        "--add-host", metavar="NAME:IP", help="an /etc/hosts entry; repeatable")] = None,
    hostname: Annotated[str | None, typer.Option(
        "--hostname", metavar="NAME",
        help="the hostname `burrow exec` shows (its own UTS namespace, /etc/hostname)")] = None,
) -> None:
    """Create a sandbox (a network namespace) attached to networks; prints its name and
    addresses. The first sandbox also starts the per-user namespace.

    Example: `burrow sandbox create api --network web:ip=10.90.0.10,alias=backend -p
    127.0.0.1:8080:80`, then `burrow exec api -- CMD`."""
    from rootless import publish as publish_mod
    from rootless import sandbox
    from rootless.store import Store

    cx = ctx(c)
    attaches = sandbox.parse_networks(network or [], network_alias or [])
    ident = sandbox.Identity.parse(hostname, dns_search or [], dns_option or [], add_host or [])
    taken = [p for r in Store(cx.paths).sandboxes().values() for p in r.ports]
    ports = publish_mod.parse(publish or [], taken)
    rec = sandbox.create(cx.world, name, attaches, ports, dns or [], cx.world.network_mtu,
                         ident)
    print(f"{name} {' '.join(rec.ips)}".rstrip())


@sandbox_app.command("ls")
def sandbox_ls(c: typer.Context, fmt: FormatOpt = "table", quiet: QuietOpt = False,
               noheading: NoHeadingOpt = False) -> None:
    """List sandboxes. A sandbox whose namespace died is `lost` until `burrow up`."""
    from rootless.status import sandbox_state
    from rootless.store import Store

    w = ctx(c).world
    rt = w.current()
    rows = [{"name": r.name, "networks": list(r.network_names), "ips": r.ips,
             "ports": [str(p) for p in r.ports], "state": sandbox_state(r, rt),
             "created": r.created}
            for r in Store(w.paths).sandboxes().values()]
    if quiet:
        for r in rows:
            print(r["name"])
        return
    emit(rows, fmt, ["name", "networks", "ips", "ports", "state"], heading=not noheading)
    if any(r["state"] == "lost" for r in rows) and fmt == "table":
        print("lost: its namespace died; `burrow up` re-creates it", file=sys.stderr)


@sandbox_app.command("inspect")
def sandbox_inspect(c: typer.Context, name: Annotated[str, typer.Argument(metavar="NAME")]
                    ) -> None:
    """Everything burrow knows about a sandbox, as JSON."""
    from rootless.store import Store

    print(json.dumps(Store(ctx(c).paths).sandbox(name).to_json(), indent=2))


@sandbox_app.command("rm")
def sandbox_rm(c: typer.Context, names: Annotated[list[str], typer.Argument(metavar="NAME")]
               ) -> None:
    """Remove sandboxes, stopping what still runs in them (SIGTERM, then SIGKILL after 2 s,
    as `podman rm -f`); removing the last one stops the namespace. Goes on past a name that
    fails, and exits 1 at the end naming each."""
    from rootless import sandbox

    w = ctx(c).world

    def rm(n: str) -> str:
        stopped = sandbox.remove(w, n)
        return n + (" (last sandbox: namespace stopped)" if stopped else "")

    each(names, rm, "sandbox rm")


@app.command("exec", context_settings={"allow_extra_args": True,
                                       "ignore_unknown_options": True})
def exec_(c: typer.Context,
          name: Annotated[str, typer.Argument(metavar="NAME", help="the sandbox")],
          cmd: Annotated[list[str], typer.Argument(
              metavar="CMD", help="the command and its arguments, after --")]) -> None:
    """Run CMD inside a sandbox, with its own /etc/resolv.conf and /etc/hosts; exits with
    CMD's exit code (127: CMD not found).

    Example: `burrow exec api -- getent hosts backend`."""
    from rootless import sandbox

    argv = sandbox.exec_argv(ctx(c).world, name, cmd)
    env = dict(os.environ)
    env["PATH"] = env.get("PATH", "") + ":/usr/sbin:/sbin"
    sys.stdout.flush()
    os.execvpe(argv[0], argv, env)
