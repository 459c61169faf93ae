"""`burrow port ...`."""

from __future__ import annotations

from typing import Annotated

import typer

from rootless.cli.core import FormatOpt, NoHeadingOpt, ctx, emit, port_app


@port_app.command("ls")
def port_ls(
    c: typer.Context,
    sandbox: Annotated[str | None, typer.Argument(metavar="SANDBOX",
                                                  help="only this sandbox's ports")] = None,
    fmt: FormatOpt = "table",
    noheading: NoHeadingOpt = False,
) -> None:
    """Published ports of every sandbox (host ports burrow chose for `-p CTR` included)."""
    from rootless.store import Store

    store = Store(ctx(c).paths)
    recs = {sandbox: store.sandbox(sandbox)} if sandbox else store.sandboxes()
    rows = [{"sandbox": n, **p.to_json(), "spec": str(p)}
            for n, rec in recs.items() for p in rec.ports]
    emit(rows, fmt, ["sandbox", "spec", "host_ip", "host_port", "container_port", "range",
                     "protocol"], heading=not noheading)
