"""`burrow port ...`."""

from __future__ import annotations

import typer

from rootless.cli.core import FormatOpt, ctx, emit, port_app


@port_app.command("ls")
def port_ls(c: typer.Context, fmt: FormatOpt = "table") -> None:
    """Published ports of every sandbox."""
    from rootless.store import Store

    rows = [{"sandbox": n, **p.to_json(), "spec": str(p)}
            for n, rec in Store(ctx(c).paths).sandboxes().items() for p in rec.ports]
    emit(rows, fmt, ["sandbox", "spec", "host_ip", "host_port", "container_port", "range",
                     "protocol"])
