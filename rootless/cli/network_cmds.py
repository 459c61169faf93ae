"""`burrow network ...`: Podman's network commands."""

from __future__ import annotations

import json
import socket
from typing import Annotated, Any

import typer

from netns.errors import BurrowError
from rootless.cli.core import FormatOpt, ctx, emit, network_app


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
