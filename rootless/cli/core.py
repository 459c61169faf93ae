"""The typer apps every command hangs on, the composition root (`make_world`) and the output
helpers shared by the command modules."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from netns.errors import BurrowError
from rootless.backend import World
from rootless.cli import output
from rootless.paths import StatePaths
from rootless.settings import Settings

# Help text is shown as written: rich markup would read `[/tcp|udp]` in -p's help as a tag.
# `-h` is `--help`, as in Podman.
PLAIN: Any = {"no_args_is_help": True, "rich_markup_mode": None,
              "context_settings": {"help_option_names": ["-h", "--help"]}}
# add_completion: typer's `--install-completion`/`--show-completion` (bash, zsh, fish).
# The first commands a new user runs, as the README's quick start (\b: click keeps the lines).
EXAMPLES = """Examples:

\b
  burrow demo                                  # try it: two sandboxes, DNS, a port; cleans up
  burrow network create web --subnet 10.90.0.0/24
  burrow sandbox create api --network web -p 127.0.0.1:8080:80
  burrow exec api -- python3 -m http.server 80 &
  burrow status                                # what runs; exit 1 if something died
  burrow up                                    # bring back what died
  burrow down                                  # stop everything (networks stay)

Run as yourself: no root needed (run by root, burrow works in root's own network
namespace: rootful). `burrow COMMAND -h` shows each command's options."""
app = typer.Typer(add_completion=True, help="Container networking for people without root.",
                  epilog=EXAMPLES, **PLAIN)
network_app = typer.Typer(help="Manage networks.", **PLAIN)
sandbox_app = typer.Typer(help="Manage sandboxes (network namespaces).", **PLAIN)
port_app = typer.Typer(help="Published ports.", **PLAIN)
app.add_typer(network_app, name="network")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(port_app, name="port")


def _plain_metavars() -> None:
    """Newer typer shows a parameter's Python type in help (`--dns <list[str]>`, `{name}`);
    show the metavar a command names (`--dns IP`), else none, as click and Podman do."""
    base = getattr(typer.core, "_TyperParameter", None)
    arg = getattr(typer.core, "TyperArgument", None)
    if base is None or arg is None or not hasattr(base, "display_type"):
        return  # an older typer: click's own metavars (TEXT, ...) are already plain

    def display_type(self: Any, ctx: Any) -> str:
        if self.param_type_name == "argument":
            return ""  # the argument's own (upper-case) name says it
        return str(self.metavar or self.name.upper())

    def usage_name(self: Any) -> str:
        name = str(self.metavar or self.name.upper())
        name = name if self.required else f"[{name}]"
        return name + ("..." if self.nargs != 1 else "")

    base.display_type = display_type
    arg._usage_display_name = usage_name
    arg._rich_display_name = lambda self: str(self.metavar or self.name.upper())


_plain_metavars()


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("burrow-net")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _print_version(value: bool) -> None:
    if value:
        print(f"burrow {_version()}")
        raise typer.Exit()


def _format(value: str) -> str:
    try:
        return output.check_format(value)
    except BurrowError as e:
        raise typer.BadParameter(str(e).removeprefix("unknown --format ")) from None


def _template_format(value: str) -> str:
    try:
        return output.check_format(value, template=True)
    except BurrowError as e:
        raise typer.BadParameter(str(e).removeprefix("unknown --format ")) from None


FormatOpt = Annotated[str, typer.Option("--format", metavar="table|json", callback=_format,
                                        help="table or json")]
NoHeadingOpt = Annotated[bool, typer.Option("--noheading", help="no table heading")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="names only")]
TemplateFormatOpt = Annotated[str, typer.Option(
    "--format", metavar="FORMAT", callback=_template_format,
    help="table, json, or a Go template such as '{{.Name}}'")]


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





def _connector_name(value: str | None) -> str | None:
    """A connector name is checked where it enters (exit 2, naming the choices), before it
    is compared with the running namespace's or reaches the world."""
    if value is None:
        return None
    from rootless.connectors import select

    try:
        select(value)
    except BurrowError as e:
        raise typer.BadParameter(str(e).removeprefix("unknown connector ")) from None
    return value


@app.callback()
def _main(
    c: typer.Context,
    connector: Annotated[str | None, typer.Option(
        "--connector", callback=_connector_name,
        help="slirp4netns or pasta (default: $BURROW_CONNECTOR, else whichever is installed, "
             "slirp4netns first); used when the namespace is created")] = None,
    allow_host_loopback: Annotated[bool, typer.Option(
        "--allow-host-loopback",
        help="let sandboxes reach the host's 127.0.0.1/::1 through the connector "
             "(10.0.2.2/fd00::2 with slirp4netns); closed by default")] = False,
    version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="print burrow's version and exit")] = False,
) -> None:
    settings = c.obj if isinstance(c.obj, Settings) else Settings.from_env()
    w = make_world(settings, connector, allow_host_loopback)
    if w.mode == "rootful" and (connector or allow_host_loopback):
        # Asked for on purpose and then silently ignored would leave a user who typed `sudo`
        # by habit wondering why the rootless world they meant never appeared.
        flag = "--connector" if connector else "--allow-host-loopback"
        raise BurrowError(f"{flag} is for the rootless world, and burrow run by root works "
                          "rootful, in this network namespace, with no connector; drop "
                          f"{flag}, or run burrow as your own user (without sudo)")
    if connector and c.invoked_subcommand != "down":
        _check_connector(w, connector)
    c.obj = Ctx(settings, w)


def _check_connector(w: World, wanted: str) -> None:
    """`--connector` applies when the namespace is created; asked of a running world of the
    other kind, it would be silently ignored, so it is an error that names the fix."""
    rt = w.current() if w.mode == "rootless" else None
    running = getattr(getattr(rt, "connector", None), "kind", None)
    if running and running != wanted:
        raise BurrowError(f"the running namespace uses {running}, not {wanted}: --connector "
                          "applies when the namespace is created. Drop --connector, or run "
                          f"`burrow down` (it removes every sandbox) and then `burrow "
                          f"--connector {wanted} up`")


def emit(rows: Sequence[dict[str, Any]], fmt: str, columns: Sequence[str], *,
         heading: bool = True, template_fields: dict[str, str] | None = None) -> None:
    text = output.render(rows, fmt, columns, heading=heading, template_fields=template_fields)
    if text:
        print(text)
