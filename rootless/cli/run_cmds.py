"""`burrow run`: a command in a fresh sandbox (rootless.runner)."""

from __future__ import annotations

from typing import Annotated

import typer

from rootless.cli.core import app, ctx


@app.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    c: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="the new sandbox's name")],
    cmd: Annotated[list[str], typer.Argument(
        metavar="CMD", help="the command and its arguments, after --")],
    rm: Annotated[bool, typer.Option("--rm", help="remove the sandbox when the command ends "
                                     "(also on Ctrl-C or SIGTERM)")] = False,
    network: Annotated[list[str] | None, typer.Option(
        "--network", "--net", help="NET[:ip=..,ip6=..,mac=..,alias=..]; repeatable "
        "(default: the dual-stack network `burrow`)")] = None,
    publish: Annotated[list[str] | None, typer.Option(
        "-p", "--publish", help="[IP:]HOST[-END]:CTR[-END][/tcp|udp]"
        "[,no-client-addr|,client-port]; repeatable")] = None,
    dns: Annotated[list[str] | None, typer.Option(
        "--dns", metavar="IP", help="extra DNS server; repeatable")] = None,
) -> None:
    """Create sandbox NAME, run CMD in it (stdin, stdout, terminal passed through), exit with
    its exit code (128+N when signal N ended it; 125 when burrow itself failed, as `podman
    run`).

    Example: `burrow run --rm job -- python3 -c 'print("hello")'`."""
    from rootless import runner, sandbox
    from rootless.ports.spec import PortSpec

    attaches = [sandbox.Attach.parse(n) for n in network or []]
    ports = [p for spec in publish or [] for p in PortSpec.parse(spec)]
    raise SystemExit(runner.run(ctx(c).world, name, attaches, ports, dns or [], cmd, rm=rm))
