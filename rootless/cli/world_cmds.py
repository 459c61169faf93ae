"""`burrow up`, `status`, `down`, `demo` and `netavark`: the world as a whole."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from rootless.cli.core import FormatOpt, app, ctx

FileOpt = Annotated[Path | None, typer.Option(
    "-f", "--file", help="a topology file (TOML: networks, sandboxes); see examples/")]


@app.command()
def up(c: typer.Context, file: FileOpt = None) -> None:
    """Start burrow's world now (rootless: the per-user namespace; the first sandbox otherwise
    does it), or repair it: a dead namespace, connector, DNS server or port forwarder comes
    back with everything it served. With -f, bring up the networks and sandboxes a topology
    file declares."""
    from rootless.recover import converge

    if file is not None:
        from rootless.cmd_topology import up_file

        raise SystemExit(up_file(ctx(c).world, file))
    from rootless.store import Store

    w = ctx(c).world
    rt = w.ensure()
    print(w.up_message(rt), flush=True)  # the world is up; restoring what it held may take a while
    failed = False
    for line in converge(rt, Store(w.paths)):
        print(line)
        failed = failed or line.startswith("could not")
    if failed:
        raise SystemExit(1)


@app.command()
def status(c: typer.Context, fmt: FormatOpt = "table") -> None:
    """Show the namespace, connector, DNS, forwarder and sandboxes. Exits 1 naming what died
    (`burrow up` brings it back)."""
    from rootless import status as status_mod

    info = status_mod.collect(ctx(c).world)
    if fmt == "json":
        print(json.dumps(info, indent=2))
    else:
        print(status_mod.render(ctx(c).world, info))
    if info["problems"]:
        raise SystemExit(1)  # something burrow runs has died: `burrow up` is the fix


@app.command()
def down(c: typer.Context, file: FileOpt = None) -> None:
    """Remove every sandbox and stop the namespace, connector, DNS server and forwarder
    (networks stay). With -f, remove what a topology file declares, networks too."""
    if file is not None:
        from rootless.cmd_topology import down_file

        raise SystemExit(down_file(ctx(c).world, file))
    had = ctx(c).world.teardown()
    print("stopped" if had else "nothing running")




@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                               "help_option_names": []})
def netavark(args: Annotated[list[str] | None, typer.Argument()] = None) -> None:
    """The engine's Netavark-compatible CLI (`burrow netavark setup ...`)."""
    from netns import netavark_cli

    raise SystemExit(netavark_cli.main(list(args or [])))


@app.command()
def demo(c: typer.Context) -> None:
    """Two sandboxes, one serving HTTP; reach it by name (v4, v6) and from the host. Uses
    the default network `burrow` and host port 127.0.0.1:8080 (another free one when that is
    taken), removes what it made, and exits 1 naming the step that failed."""
    import rootless.demo as demo_mod

    raise SystemExit(demo_mod.run(ctx(c).world))
