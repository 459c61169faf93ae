"""`burrow`: the typer app, and the composition root that wires the adapters together."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import typer

from netns.errors import BurrowError
from rootless import world
from rootless.paths import StatePaths

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Container networking for people without root.")
network_app = typer.Typer(no_args_is_help=True, help="Manage networks.")
sandbox_app = typer.Typer(no_args_is_help=True, help="Manage sandboxes (network namespaces).")
port_app = typer.Typer(no_args_is_help=True, help="Published ports.")
app.add_typer(network_app, name="network")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(port_app, name="port")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Ctx:
    paths: StatePaths
    opts: world.WorldOptions


_CTX: list[Ctx] = []  # set once by the callback; the only module-level handle


def ctx() -> Ctx:
    return _CTX[0]


FormatOpt = Annotated[str, typer.Option("--format", help="table or json")]


@app.callback()
def _main(
    connector: Annotated[str | None, typer.Option(
        "--connector", envvar="BURROW_CONNECTOR",
        help="slirp4netns or pasta (default: whichever is installed, slirp4netns first); "
             "used when the namespace is created")] = None,
    allow_host_loopback: Annotated[bool, typer.Option(
        "--allow-host-loopback",
        help="let sandboxes reach the host's 127.0.0.1/::1 through the connector "
             "(10.0.2.2/fd00::2 with slirp4netns); closed by default")] = False,
) -> None:
    _CTX[:] = [Ctx(StatePaths.for_user(), world.WorldOptions(connector, allow_host_loopback))]


def emit(rows: Sequence[dict[str, Any]], fmt: str, columns: Sequence[str]) -> None:
    if fmt == "json":
        print(json.dumps(list(rows), indent=2))
        return
    if fmt != "table":
        raise BurrowError(f"unknown --format {fmt!r}; use table or json")
    cells = [[str(c).upper() for c in columns]] + [
        [_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _cell(v: Any) -> str:
    if isinstance(v, list | tuple):
        return ",".join(str(x) for x in v)
    return "" if v is None else str(v)


@app.command()
def up() -> None:
    """Create the user namespace and its connector now (the first sandbox otherwise does)."""
    c = ctx()
    w = world.ensure(c.paths, c.opts)
    conn = w.connector
    print(f"namespace holder {w.holder.pid}, connector {conn.kind if conn else '-'}"
          f"{' (created)' if w.created else ''}")


@app.command()
def status(fmt: FormatOpt = "table") -> None:
    """The namespace, connector, DNS, forwarder and sandboxes."""
    from rootless import status as status_mod

    info = status_mod.collect(ctx().paths)
    if fmt == "json":
        print(json.dumps(info, indent=2))
    else:
        print(status_mod.render(info))


@app.command()
def down() -> None:
    """Remove every sandbox and stop the namespace, connector, DNS server and forwarder."""
    had = world.teardown(ctx().paths)
    print("stopped" if had else "nothing running")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        app(args=list(argv) if argv is not None else None, prog_name="burrow",
            standalone_mode=False)
    except BurrowError as e:
        print(f"Error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except SystemExit as e:
        return int(e.code or 0) if isinstance(e.code, int) or e.code is None else 1
    except Exception as e:  # click's usage errors
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            return int(e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())

_ = os  # kept for subcommand modules that import cli helpers
