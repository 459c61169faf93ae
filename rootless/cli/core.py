"""The typer apps every command hangs on, the composition root (`make_world`) and the output
helpers shared by the command modules."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from netns.errors import BurrowError
from rootless.backend import World
from rootless.paths import StatePaths
from rootless.settings import Settings

# Help text is shown as written: rich markup would read `[/tcp|udp]` in -p's help as a tag.
PLAIN: Any = {"no_args_is_help": True, "rich_markup_mode": None}
app = typer.Typer(add_completion=False, help="Container networking for people without root.",
                  **PLAIN)
network_app = typer.Typer(help="Manage networks.", **PLAIN)
sandbox_app = typer.Typer(help="Manage sandboxes (network namespaces).", **PLAIN)
port_app = typer.Typer(help="Published ports.", **PLAIN)
app.add_typer(network_app, name="network")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(port_app, name="port")

@dataclass(frozen=True)
class Ctx:
    """What every command gets: the settings, and the world they pick (set by `_main`)."""
    settings: Settings
    world: World

    @property
    def paths(self) -> StatePaths:
        return self.world.paths


def make_world(settings: Settings, connector: str | None, allow_host_loopback: bool) -> World:
    """The one place that decides rootless or rootful: real root (euid 0 in the initial user
    namespace) gets the rootful world, everyone else the per-user namespace."""
    from rootless import rootful, world

    is_root = rootful.is_initial_root()
    paths = StatePaths.choose(settings.state_dir, settings.data_dir, rootful=is_root,
                              env=settings.environ())
    if is_root:
        # --connector/--allow-host-loopback do not apply: no connector, the host is right here.
        return rootful.RootfulWorld(paths, settings)
    return world.RootlessWorld(paths, world.WorldOptions(connector or settings.connector,
                                                         allow_host_loopback), settings)


def ctx(c: typer.Context) -> Ctx:
    obj = c.find_root().obj
    assert isinstance(obj, Ctx), "the app callback sets the context"
    return obj


FormatOpt = Annotated[str, typer.Option("--format", help="table or json")]


@app.callback()
def _main(
    c: typer.Context,
    connector: Annotated[str | None, typer.Option(
        "--connector",
        help="slirp4netns or pasta (default: $BURROW_CONNECTOR, else whichever is installed, "
             "slirp4netns first); used when the namespace is created")] = None,
    allow_host_loopback: Annotated[bool, typer.Option(
        "--allow-host-loopback",
        help="let sandboxes reach the host's 127.0.0.1/::1 through the connector "
             "(10.0.2.2/fd00::2 with slirp4netns); closed by default")] = False,
) -> None:
    settings = c.obj if isinstance(c.obj, Settings) else Settings.from_env()
    c.obj = Ctx(settings, make_world(settings, connector, allow_host_loopback))


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
