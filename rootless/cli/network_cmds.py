"""`burrow network ...`: Podman's network commands, flags and JSON."""

from __future__ import annotations

import json
import socket
import sys
from typing import Annotated, Any

import typer

from netns.errors import BurrowError
from rootless.cli.core import NoHeadingOpt, QuietOpt, TemplateFormatOpt, ctx, emit, network_app
from rootless.cli.output import each, go_template

NamesArg = Annotated[list[str], typer.Argument(metavar="NAME")]
# Go-template names (Podman's Network struct) -> the JSON keys they show.
TEMPLATE_FIELDS = {"Name": "name", "ID": "id", "Driver": "driver",
                   "NetworkInterface": "network_interface", "Created": "created",
                   "Subnets": "subnets", "IPv6Enabled": "ipv6_enabled", "Internal": "internal",
                   "DNSEnabled": "dns_enabled", "Labels": "labels", "Options": "options",
                   "IPAMOptions": "ipam_options", "NetworkDNSServers": "network_dns_servers"}
COLUMNS = ["name", "driver", "subnets", "network_interface", "dns_enabled", "internal"]


@network_app.command("create")
def network_create(
    c: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME")],
    subnet: Annotated[list[str] | None, typer.Option(
        "--subnet", metavar="CIDR",
        help="CIDR; repeat for dual-stack (default: a free /24 in 10.89.0.0/16)")] = None,
    gateway: Annotated[list[str] | None, typer.Option(
        "--gateway", metavar="IP",
        help="per --subnet, in order (default: the subnet's first address)")] = None,
    ip_range: Annotated[list[str] | None, typer.Option(
        "--ip-range", metavar="CIDR",
        help="CIDR inside a subnet: where automatic addresses come from")] = None,
    ipv6: Annotated[bool, typer.Option(
        "--ipv6", help="add an IPv6 subnet (a free /64 in fd89::/32 unless --subnet gives one)")
    ] = False,
    internal: Annotated[bool, typer.Option(
        "--internal", help="no route out: sandboxes reach each other only")] = False,
    disable_dns: Annotated[bool, typer.Option(
        "--disable-dns", help="no burrow-dns on this network")] = False,
    dns: Annotated[list[str] | None, typer.Option(
        "--dns", metavar="IP", help="upstream DNS server for names burrow-dns does not know")] = None,
    driver: Annotated[str, typer.Option("--driver", "-d", metavar="DRIVER", help="bridge, or macvlan (root)")
                      ] = "bridge",
    opt: Annotated[list[str] | None, typer.Option(
        "--opt", "-o", metavar="KEY=VALUE", help="bridge: mtu=..,isolate=true|false|strict,metric=..; "
        "macvlan: parent=IF,mode=bridge|private|vepa|passthru,mtu=..,metric=..")] = None,
    label: Annotated[list[str] | None, typer.Option(
        "--label", metavar="KEY[=VALUE]", help="metadata, for `network ls --filter label=`; "
        "repeatable")] = None,
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
                                 tuple(dns or ()), driver, netconf.parse_opts(opt or []),
                                 netconf.parse_labels(label or []))
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
        net = netconf.make_network(req, store.networks(), ctx(c).world.network_mtu, rootless=rootless,
                                   host=() if rootless else netconf.host_subnets())
        store.save_network(net)
    print(name)


def _row(net: dict[str, Any]) -> dict[str, Any]:
    """A table row: the network's own JSON (Podman's keys), subnets shortened to CIDRs."""
    return {**net, "subnets": [s["subnet"] for s in net.get("subnets", [])]}


@network_app.command("ls")
def network_ls(
    c: typer.Context,
    fmt: TemplateFormatOpt = "table",
    filters: Annotated[list[str] | None, typer.Option(
        "--filter", "-f", metavar="KEY=VALUE",
        help="name=REGEX, id=REGEX, driver=D, label=K[=V], label!=K[=V], dangling=true|false,"
        " until=TIME (created before: 24h, 2026-11-29, Unix seconds); the same key again: "
        "either matches; different keys: all must")] = None,
    quiet: QuietOpt = False,
    noheading: NoHeadingOpt = False,
) -> None:
    """List networks (JSON: Podman's network objects, as `network inspect`)."""
    from rootless import netconf
    from rootless.store import Store

    store = Store(ctx(c).paths)
    nets = netconf.filter_networks(list(store.networks().values()),
                                   netconf.parse_filters(filters or []),
                                   lambda n: bool(store.users_of(n)))
    if quiet:
        for n in nets:
            print(n["name"])
    elif fmt == "json":
        print(json.dumps(nets, indent=2))
    else:
        emit([_row(n) for n in nets], fmt, COLUMNS, heading=not noheading,
             template_fields=TEMPLATE_FIELDS)


@network_app.command("inspect")
def network_inspect(c: typer.Context, names: NamesArg, fmt: TemplateFormatOpt = "json") -> None:
    """Networks as Podman-format JSON (or `--format '{{.Name}}'`, one line per network).
    Shows every network found; exits 1 at the end naming those that do not exist."""
    from rootless.store import Store

    store = Store(ctx(c).paths)
    found: list[dict[str, Any]] = []
    missing: list[str] = []
    for n in names:
        try:
            found.append(store.network(n))
        except BurrowError as e:
            print(f"Error: {e}", file=sys.stderr)
            missing.append(n)
    if fmt in ("json", "table"):
        print(json.dumps(found, indent=2))
    else:
        for net in found:
            print(go_template(fmt, net, TEMPLATE_FIELDS))
    if missing:
        raise BurrowError(f"network inspect: no such network(s): {', '.join(missing)}")


@network_app.command("exists")
def network_exists(c: typer.Context, name: Annotated[str, typer.Argument(metavar="NAME")]
                   ) -> None:
    """Exit 0 if the network exists, 1 if not (nothing printed), as `podman network exists`."""
    from rootless.store import Store

    if name not in Store(ctx(c).paths).networks():
        raise SystemExit(1)


@network_app.command("rm")
def network_rm(
    c: typer.Context, names: NamesArg,
    force: Annotated[bool, typer.Option(
        "--force", "-f", help="remove the sandboxes that use it first (as Podman's -f)")
    ] = False,
) -> None:
    """Remove networks (not the default network `burrow`, as Podman keeps `podman`). Goes on
    past a name that fails, and exits 1 at the end naming each."""
    from rootless import netconf, sandbox
    from rootless.store import Store

    w = ctx(c).world
    store = Store(w.paths)

    def rm(n: str) -> str:
        store.network(n)
        if n == netconf.DEFAULT_NETWORK:
            # As Podman refuses `podman network rm podman`: sandboxes created without
            # --network expect it, and removing it would only have it silently re-made.
            raise BurrowError(f"the default network {n} cannot be removed; remove or "
                              f"disconnect its sandboxes instead (`burrow sandbox ls`)")
        users = store.users_of(n)
        for user in users if force else []:
            sandbox.remove(w, user)
            print(f"removed sandbox {user}")
        with store.lock():
            users = store.users_of(n)
            if users:
                raise BurrowError(
                    f"network {n} is used by sandbox(es) {', '.join(users)}; remove them "
                    f"first (`burrow sandbox rm {users[0]}`, or `burrow network rm -f {n}`) or "
                    f"`burrow network disconnect {n} {users[0]}`")
            store.delete_network(n)
        return n

    each(names, rm, "network rm")


@network_app.command("prune")
def network_prune(
    c: typer.Context,
    force: Annotated[bool, typer.Option("--force", "-f", help="do not ask")] = False,
    filters: Annotated[list[str] | None, typer.Option(
        "--filter", metavar="KEY=VALUE",
        help="prune only networks with label=K[=V], without label!=K[=V], or created before "
        "until=TIME (24h, 2026-11-29, Unix seconds); as Podman's")] = None,
) -> None:
    """Remove every network no sandbox uses, except the default network `burrow`. Asks
    first unless -f (no answer, as from a script without -f, is no). Prints each name removed."""
    from rootless import netconf
    from rootless.store import Store

    wanted = netconf.parse_filters(filters or [], netconf.PRUNE_FILTER_KEYS)
    if not force and not _confirm("WARNING! This will remove all networks not used by at "
                                  "least one sandbox.\nThe default network "
                                  f"{netconf.DEFAULT_NETWORK} will not be removed.\n"
                                  "Are you sure you want to continue? [y/N] "):
        raise SystemExit(1)
    store = Store(ctx(c).paths)
    with store.lock():
        nets = netconf.filter_networks(list(store.networks().values()), wanted,
                                       lambda n: bool(store.users_of(n)))
        for n in (net["name"] for net in nets):
            if n != netconf.DEFAULT_NETWORK and not store.users_of(n):
                store.delete_network(n)
                print(n)


def _confirm(question: str) -> bool:
    print(question, end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline() if sys.stdin is not None else ""
    if not answer:
        print(file=sys.stderr)
    return answer.strip().lower() in ("y", "yes")


@network_app.command("reload")
def network_reload(
    c: typer.Context,
    names: Annotated[list[str] | None, typer.Argument(metavar="SANDBOX")] = None,
    all_: Annotated[bool, typer.Option("--all", "-a", help="every running sandbox")] = False,
) -> None:
    """Set a sandbox's networking up again (the engine's teardown then setup: firewall rules,
    addresses, routes, DNS), as `podman network reload`. Same addresses and MACs."""
    from rootless import sandbox
    from rootless.store import Store

    w = ctx(c).world
    if all_ == bool(names):
        raise BurrowError("network reload: give sandbox names or --all (not both)")
    targets = list(names or Store(w.paths).sandboxes())

    def reload(n: str) -> str:
        sandbox.reload(w, n)
        return n

    each(targets, reload, "network reload")


@network_app.command("connect")
def network_connect(
    c: typer.Context,
    network: Annotated[str, typer.Argument(metavar="NETWORK")],
    name: Annotated[str, typer.Argument(metavar="SANDBOX")],
    ip: Annotated[str | None, typer.Option(
        "--ip", metavar="IP", help="static IPv4 (default: the next free)")] = None,
    ip6: Annotated[str | None, typer.Option(
        "--ip6", metavar="IP", help="static IPv6 (default: the next free)")] = None,
    mac_address: Annotated[str | None, typer.Option(
        "--mac-address", metavar="MAC", help="static MAC, e.g. 92:d0:c6:0a:00:10")] = None,
    mac: Annotated[str | None, typer.Option("--mac", metavar="MAC", hidden=True)] = None,
    alias: Annotated[list[str] | None, typer.Option(
        "--alias", metavar="NAME",
        help="another name this sandbox answers to on NET; repeatable")] = None,
) -> None:
    """Attach a sandbox to one more network."""
    from rootless import sandbox

    if mac and mac_address and mac != mac_address:
        raise BurrowError("--mac is the older spelling of --mac-address; give one")
    mac = mac_address or mac
    opts = [f"ip={ip}"] * bool(ip) + [f"ip6={ip6}"] * bool(ip6) + [f"mac={mac}"] * bool(mac)
    opts += [f"alias={a}" for a in alias or []]
    att = sandbox.Attach.parse(network + (":" + ",".join(opts) if opts else ""))
    sandbox.connect(ctx(c).world, att, name)


@network_app.command("disconnect")
def network_disconnect(c: typer.Context, network: Annotated[str, typer.Argument(metavar="NETWORK")],
                       name: Annotated[str, typer.Argument(metavar="SANDBOX")]) -> None:
    """Detach a sandbox from a network."""
    from rootless import sandbox

    sandbox.disconnect(ctx(c).world, network, name)
