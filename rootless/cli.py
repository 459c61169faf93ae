"""`burrow`: the typer app, and the composition root that wires the adapters together."""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
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
from rootless.podman import podman_app  # noqa: E402  (its heavier imports are lazy, per command)

app.add_typer(podman_app, name="podman")

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

    if rootful.is_initial_root():
        # --connector/--allow-host-loopback do not apply: no connector, the host is right here.
        return rootful.RootfulWorld(
            StatePaths(settings.state_dir or Path(rootful.ROOTFUL_STATE_DIR)), settings)
    paths = StatePaths(settings.state_dir) if settings.state_dir else StatePaths.for_user(
        {"XDG_RUNTIME_DIR": settings.xdg_runtime_dir or ""})
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


@app.command()
def up(c: typer.Context) -> None:
    """Create the world now (the first sandbox otherwise does), or repair it: a dead namespace,
    connector, DNS server or port forwarder comes back with everything it served."""
    from rootless.recover import converge
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
    """The namespace, connector, DNS, forwarder and sandboxes."""
    from rootless import status as status_mod

    info = status_mod.collect(ctx(c).world)
    if fmt == "json":
        print(json.dumps(info, indent=2))
    else:
        print(status_mod.render(ctx(c).world, info))
    if info["problems"]:
        raise SystemExit(1)  # something burrow runs has died: `burrow up` is the fix


@app.command()
def down(c: typer.Context) -> None:
    """Remove every sandbox and stop the namespace, connector, DNS server and forwarder."""
    had = ctx(c).world.teardown()
    print("stopped" if had else "nothing running")



# -- sandboxes ------------------------------------------------------------------------------
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


# -- networks -------------------------------------------------------------------------------
@network_app.command("create")
def network_create(
    c: typer.Context,
    name: str,
    subnet: Annotated[list[str] | None, typer.Option(
        "--subnet", help="CIDR; repeat for dual-stack (default: a free /24 in 10.89.0.0/16)")] = None,
    gateway: Annotated[list[str] | None, typer.Option(
        "--gateway", help="per --subnet, in order (default: the subnet's first address)")] = None,
    ip_range: Annotated[list[str] | None, typer.Option(
        "--ip-range", help="CIDR inside a subnet: where automatic addresses come from")] = None,
    ipv6: Annotated[bool, typer.Option(
        "--ipv6", help="add an IPv6 subnet (a free /64 in fd89::/32 unless --subnet gives one)")
    ] = False,
    internal: Annotated[bool, typer.Option(
        "--internal", help="no route out: sandboxes reach each other only")] = False,
    disable_dns: Annotated[bool, typer.Option(
        "--disable-dns", help="no burrow-dns on this network")] = False,
    dns: Annotated[list[str] | None, typer.Option(
        "--dns", help="upstream DNS server for names burrow-dns does not know")] = None,
    driver: Annotated[str, typer.Option("--driver", "-d", help="bridge, or macvlan (root)")
                      ] = "bridge",
    opt: Annotated[list[str] | None, typer.Option(
        "--opt", "-o", help="bridge: mtu=..,isolate=true|false|strict,metric=..; "
        "macvlan: parent=IF,mode=bridge|private|vepa|passthru,mtu=..,metric=..")] = None,
) -> None:
    """Create a network (Podman's flags and JSON format).

    --driver bridge (the default) gives the network a bridge of its own, with DNS, NAT and
    published ports. --driver macvlan (real root only) puts sandboxes straight on a host LAN:
    `burrow network create lan -d macvlan -o parent=eth0 --subnet 192.168.1.0/24
    --ip-range 192.168.1.200/29`."""
    from rootless import netconf
    from rootless.store import Store

    req = netconf.NetworkRequest(name, tuple(subnet or ()), tuple(gateway or ()),
                                 tuple(ip_range or ()), ipv6, internal, disable_dns,
                                 tuple(dns or ()), driver, netconf.parse_opts(opt or []))
    rootless = ctx(c).world.mode == "rootless"
    parent = dict(req.options).get("parent")
    if parent and not rootless:
        try:
            socket.if_nametoindex(parent)
        except OSError:
            raise BurrowError(f"macvlan parent interface {parent!r} does not exist in this "
                              "network namespace; see `ip link`") from None
    store = Store(ctx(c).paths)
    with store.lock():
        net = netconf.make_network(req, store.networks(), ctx(c).world.network_mtu, rootless=rootless)
        store.save_network(net)
    print(name)


def _network_row(net: dict[str, Any]) -> dict[str, Any]:
    return {"name": net["name"], "driver": net.get("driver"),
            "subnets": [s["subnet"] for s in net.get("subnets", [])],
            "interface": net.get("network_interface"), "dns": net.get("dns_enabled"),
            "internal": net.get("internal")}


@network_app.command("ls")
def network_ls(c: typer.Context, fmt: FormatOpt = "table") -> None:
    """List networks."""
    from rootless.store import Store

    rows = [_network_row(n) for n in Store(ctx(c).paths).networks().values()]
    emit(rows, fmt, ["name", "driver", "subnets", "interface", "dns", "internal"])


@network_app.command("inspect")
def network_inspect(c: typer.Context, names: list[str]) -> None:
    """Networks as Podman-format JSON."""
    from rootless.store import Store

    store = Store(ctx(c).paths)
    print(json.dumps([store.network(n) for n in names], indent=2))


@network_app.command("rm")
def network_rm(c: typer.Context, names: list[str]) -> None:
    """Remove networks no sandbox uses."""
    from rootless.store import Store

    store = Store(ctx(c).paths)
    with store.lock():
        for n in names:
            store.network(n)
            users = store.users_of(n)
            if users:
                raise BurrowError(f"network {n} is used by sandbox(es) {', '.join(users)}; "
                                  f"remove them first (`burrow sandbox rm {users[0]}`) or "
                                  f"`burrow network disconnect {n} {users[0]}`")
            store.delete_network(n)
            print(n)


@network_app.command("prune")
def network_prune(c: typer.Context) -> None:
    """Remove every network no sandbox uses."""
    from rootless.store import Store

    store = Store(ctx(c).paths)
    with store.lock():
        for n in store.networks():
            if not store.users_of(n):
                store.delete_network(n)
                print(n)


@network_app.command("connect")
def network_connect(
    c: typer.Context,
    network: str, name: str,
    ip: Annotated[str | None, typer.Option("--ip", help="static IPv4 (default: the next free)")
                  ] = None,
    ip6: Annotated[str | None, typer.Option("--ip6", help="static IPv6 (default: the next free)")
                   ] = None,
    mac: Annotated[str | None, typer.Option("--mac", help="static MAC, e.g. 92:d0:c6:0a:00:10")
                   ] = None,
    alias: Annotated[list[str] | None, typer.Option(
        "--alias", help="another name this sandbox answers to on NET; repeatable")] = None,
) -> None:
    """Attach a sandbox to one more network."""
    from rootless import sandbox

    opts = [f"ip={ip}"] * bool(ip) + [f"ip6={ip6}"] * bool(ip6) + [f"mac={mac}"] * bool(mac)
    opts += [f"alias={a}" for a in alias or []]
    att = sandbox.Attach.parse(network + (":" + ",".join(opts) if opts else ""))
    sandbox.connect(ctx(c).world, att, name)


@network_app.command("disconnect")
def network_disconnect(c: typer.Context, network: str, name: str) -> None:
    """Detach a sandbox from a network."""
    from rootless import sandbox

    sandbox.disconnect(ctx(c).world, network, name)


# -- ports ----------------------------------------------------------------------------------
@port_app.command("ls")
def port_ls(c: typer.Context, fmt: FormatOpt = "table") -> None:
    """Published ports of every sandbox."""
    from rootless.store import Store

    rows = [{"sandbox": n, **p.to_json(), "spec": str(p)}
            for n, rec in Store(ctx(c).paths).sandboxes().items() for p in rec.ports]
    emit(rows, fmt, ["sandbox", "spec", "host_ip", "host_port", "container_port", "range",
                     "protocol"])


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                               "help_option_names": []})
def netavark(args: Annotated[list[str] | None, typer.Argument()] = None) -> None:
    """The engine's Netavark-compatible CLI (`burrow netavark setup ...`)."""
    from netns import netavark_cli

    raise SystemExit(netavark_cli.main(list(args or [])))


@app.command()
def demo(c: typer.Context) -> None:
    """Two sandboxes, one serving HTTP; reach it by name (v4, v6) and from the host."""
    import rootless.demo as demo_mod

    raise SystemExit(demo_mod.run(ctx(c).world))


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = Settings.from_env()  # the one read of the BURROW_* environment
    except BurrowError as e:
        print(f"Error: {e}", file=sys.stderr)
        return e.exit_code
    try:
        app(args=list(argv) if argv is not None else None, prog_name="burrow",
            standalone_mode=False, obj=settings)
    except BurrowError as e:
        print(f"Error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except SystemExit as e:
        return int(e.code or 0) if isinstance(e.code, int) or e.code is None else 1
    except Exception as e:
        # Usage errors come from the click copy that typer bundles (typer._click), so match
        # them by shape rather than importing a `click` that may not be installed.
        if hasattr(e, "show") and isinstance(getattr(e, "exit_code", None), int):
            e.show()
            return int(getattr(e, "exit_code"))  # noqa: B009 - duck-typed click exception
        if type(e).__name__ == "Abort":
            return 1
        if settings.debug:
            raise
        print(f"Error: {type(e).__name__}: {e} (set BURROW_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

