"""Sandboxes: network namespaces in the world (`rootless.backend.World`), attached to networks
by the engine.

A sandbox's netns is a bind mount on `<state>/netns/NAME` (rootless: on the holder's private
tmpfs, so it vanishes with the namespace), so it needs no process to stay alive. Commands run
in it through `burrow exec`, with a private mount namespace that shows them their own
resolv.conf and hosts. How its ports are published is the world's business (`Ports`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import os
import re
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from netns import names
from netns.errors import BurrowError
from rootless import netconf
from rootless.backend import Runtime, World, require
from rootless.engine_call import netavark, options, teardown_sandbox
from rootless.ports.spec import PortSpec, overlaps
from rootless.procs import ProcRef, stop_all
from rootless.records import LOST, RUNNING, Attachment, HostEntry, SandboxRecord, rfc3339
from rootless.store import HOSTNAME, HOSTS, RESOLV, Store

NONE = "none"  # `--network none`: a namespace with loopback only, as in Podman
ATTACH_KEYS = "ip, ip6, mac, alias or interface_name"
STOP_GRACE = 2.0  # seconds from SIGTERM to SIGKILL for what runs in a sandbox being removed


@dataclass(frozen=True)
class Attach:
    """`--network NET[:ip=..,ip=..,mac=..,alias=..,interface_name=..]` (Podman's keys; `ip=`
    takes IPv4 or IPv6 and may be repeated; `ip6=` is kept as burrow's older spelling)."""
    network: str
    ips: tuple[str, ...] = ()
    mac: str | None = None
    aliases: tuple[str, ...] = ()
    interface: str | None = None

    @classmethod
    def parse(cls, text: str) -> Attach:
        name, _, opts = text.partition(":")
        netconf.check_name(name, "network")
        ips: list[str] = []
        aliases: list[str] = []
        mac = interface = None
        for kv in filter(None, opts.split(",")):
            k, sep, v = kv.partition("=")
            if not sep:
                raise BurrowError(f"invalid --network option {kv!r}: expected KEY=VALUE with "
                                  f"{ATTACH_KEYS}")
            if k in ("ip", "ip6"):
                ips.append(_ip(k, v, ips))
            elif k == "mac":
                mac = names.mac(v, "mac=")
            elif k == "alias":
                aliases.append(netconf.check_name(v, "alias"))
            elif k == "interface_name":
                interface = names.ifname(v, "interface_name=")
            else:
                raise BurrowError(f"unknown --network option {k!r}; use {ATTACH_KEYS}")
        return cls(name, tuple(ips), mac, tuple(aliases), interface)


def _ip(key: str, text: str, have: Sequence[str]) -> str:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise BurrowError(f"invalid {key}={text}: not an IP address") from None
    if key == "ip6" and addr.version != 6:
        raise BurrowError(f"invalid ip6={text}: not an IPv6 address (ip= takes either)")
    if any(ipaddress.ip_address(h).version == addr.version for h in have):
        raise BurrowError(f"invalid {key}={text}: one IPv{addr.version} address per network")
    return str(addr)


def parse_networks(specs: Sequence[str], aliases: Sequence[str] = ()) -> list[Attach]:
    """Every `--network` of a create (`[Attach("none")]` for `--network none`; `[]` for the
    default). `--network-alias` goes to every network, as Podman's global flag does."""
    if NONE in specs:
        if len(specs) > 1:
            raise BurrowError("--network none cannot be combined with other networks")
        if aliases:
            raise BurrowError("--network-alias needs a network; --network none has none")
        return [Attach(NONE)]
    attaches = [Attach.parse(n) for n in specs]
    if aliases and not attaches:
        attaches = [Attach(netconf.DEFAULT_NETWORK)]
    extra = tuple(netconf.check_name(a, "alias") for a in aliases)
    return [dataclasses.replace(a, aliases=(*a.aliases, *extra)) for a in attaches]


@dataclass(frozen=True)
class Identity:
    """What a sandbox's /etc/hostname, /etc/hosts and resolv.conf say besides its networks:
    `--hostname`, `--add-host`, `--dns-search`, `--dns-option`."""
    hostname: str | None = None
    dns_search: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    hosts: tuple[HostEntry, ...] = ()

    @classmethod
    def parse(cls, hostname: str | None = None, dns_search: Sequence[str] = (),
              dns_options: Sequence[str] = (), add_hosts: Sequence[str] = ()) -> Identity:
        if hostname is not None and not _HOSTNAME.fullmatch(hostname):
            raise BurrowError(f"invalid --hostname {hostname!r}: letters, digits, '-' and "
                              "'.', at most 64 characters")
        for d in dns_search:
            if d != "." and not _DOMAIN.fullmatch(d):
                raise BurrowError(f"invalid --dns-search {d!r}: expected a domain name, "
                                  "or '.' for none")
        for o in dns_options:
            if not _OPTION.fullmatch(o):
                raise BurrowError(f"invalid --dns-option {o!r}: expected a resolv.conf "
                                  "option such as ndots:2 or edns0")
        return cls(hostname, tuple(dns_search), tuple(dns_options),
                   tuple(_host_entry(h) for h in add_hosts))


_HOSTNAME = re.compile(r"(?=.{1,64}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*")
_DOMAIN = re.compile(r"(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?)+")
_OPTION = re.compile(r"[A-Za-z0-9_-]+(:[0-9]+)?")


def _host_entry(text: str) -> HostEntry:
    """`NAME:IP` (Podman's `--add-host`; the IP may be IPv6, so split at the first colon)."""
    name, sep, ip = text.partition(":")
    if not sep or not _HOSTNAME.fullmatch(name):
        raise BurrowError(f"invalid --add-host {text!r}: expected NAME:IP, e.g. db:10.0.0.5")
    try:
        return HostEntry(name, str(ipaddress.ip_address(ip.strip("[]"))))
    except ValueError:
        raise BurrowError(f"invalid --add-host {text!r}: {ip!r} is not an IP address") from None


def _ensure_default(store: Store, mtu: int | None, rootful: bool) -> None:
    nets = store.networks()
    if netconf.DEFAULT_NETWORK not in nets:
        # Rootful, the bridge is the host's: never on a subnet the host routes already.
        host = netconf.host_subnets() if rootful else ()
        store.save_network(netconf.make_network(netconf.default_request(host, nets), nets, mtu,
                                                host=host))


def _port_clash(store: Store, ports: Sequence[PortSpec]) -> None:
    for other, rec in store.sandboxes().items():
        for p in rec.ports:
            for mine in ports:
                if overlaps(mine, p):
                    raise BurrowError(f"host port {mine.host_port}/{mine.protocol} is already "
                                      f"published by sandbox {other}; pick another host port")


def _check_create(name: str, attaches: Sequence[Attach], dns: Sequence[str]) -> None:
    netconf.check_name(name, "sandbox")
    for d in dns:
        try:
            ipaddress.ip_address(d)
        except ValueError:
            raise BurrowError(f"invalid --dns {d!r}: expected an IP address") from None
    if len({a.network for a in attaches}) != len(attaches):
        raise BurrowError("a network is given twice; use one --network per network")
    given = [a.interface for a in attaches if a.interface]
    if len(set(given)) != len(given):
        raise BurrowError("an interface_name is given twice; each network needs its own")


def _ifnames(attaches: Sequence[Attach]) -> list[str]:
    """interface_name= where given, else the next free ethN (as Podman numbers them)."""
    taken = {a.interface for a in attaches if a.interface}
    free = (f"eth{i}" for i in range(10000) if f"eth{i}" not in taken)
    return [a.interface or next(free) for a in attaches]


def _reserve(store: Store, name: str, attaches: Sequence[Attach], ports: Sequence[PortSpec],
             dns: Sequence[str], mtu: int | None, ident: Identity,
             rootful: bool = False) -> SandboxRecord:
    """Choose addresses and write the record (`creating`), all under the IPAM lock."""
    with store.lock():
        if store.exists(name):
            raise BurrowError(f"sandbox {name} already exists; remove it with "
                              f"`burrow sandbox rm {name}` or pick another name")
        if any(a.network == netconf.DEFAULT_NETWORK for a in attaches):
            _ensure_default(store, mtu, rootful)
        nets = {a.network: store.network(a.network) for a in attaches}
        if ports and not nets:
            raise BurrowError("-p needs a network: --network none has no address to forward "
                              "to; drop -p, or give a --network")
        if ports and all(n.get("driver", "bridge") != "bridge" for n in nets.values()):
            raise BurrowError(f"-p needs a bridge network: {', '.join(nets)} "
                              f"{'is' if len(nets) == 1 else 'are'} macvlan, where the LAN "
                              "reaches the sandbox at its own address; drop -p, or add a "
                              "bridge network")
        networks = tuple(
            (a.network, Attachment(ifname, tuple(netconf.allocate(
                nets[a.network], store.used_ips(a.network), a.ips)), a.aliases, a.mac))
            for a, ifname in zip(attaches, _ifnames(attaches), strict=True))
        _port_clash(store, ports)
        rec = SandboxRecord(
            name=name,
            id=hashlib.sha256(f"{name}{time.time_ns()}{os.getpid()}".encode()).hexdigest(),
            networks=networks, ports=tuple(ports), dns=tuple(dns), created=rfc3339(time.time()),
            creator=ProcRef.of(os.getpid()) or ProcRef(os.getpid(), 0),
            hostname=ident.hostname, dns_search=ident.dns_search,
            dns_options=ident.dns_options, hosts=ident.hosts)
        store.save_sandbox(rec)  # the reservation: addresses are now taken
        return rec


def create(w: World, name: str, attaches: Sequence[Attach], ports: Sequence[PortSpec],
           dns: Sequence[str], mtu: int | None, ident: Identity = Identity()) -> SandboxRecord:
    """A sandbox on `attaches` (none given: the default network; `[Attach("none")]`: no
    network, loopback only)."""
    from rootless.recover import converge

    attaches = list(attaches) or [Attach(netconf.DEFAULT_NETWORK)]
    if [a.network for a in attaches] == [NONE]:
        attaches = []
    _check_create(name, attaches, dns)
    store = Store(w.paths)
    rec = _reserve(store, name, attaches, ports, dns, mtu, ident, w.mode != "rootless")
    with ExitStack() as undo:
        undo.callback(store.delete_sandbox, name)
        rt = w.ensure()
        # A new world, a dead forwarder or DNS server: put back what the records say first,
        # so a forwarder this command starts forwards every recorded port, not only ours.
        converge(rt, store)
        rt.ports.check(ports)
        # Where its namespace will be, recorded first: a crash from here on leaves a record
        # that `burrow up` can tear down completely.
        rec = rec.replace(netns=rt.netns_path(name), world=rt.world_id)
        store.save_sandbox(rec)
        undo.callback(teardown_sandbox, rt, rec, store)
        rt.create_netns(name)
        rec = rec.replace(status=netavark(rt, "setup", rec.netns or "", options(rt, rec, store)))
        rt.ports.publish(rec.to_json())
        rec = rec.replace(state=RUNNING, creator=None)
        store.save_sandbox(rec)
        undo.pop_all()
    write_resolv(store, rec, rt)
    return rec


def _netns_outside(rt: Runtime, name: str) -> str:
    from rootless.world import RootlessRuntime

    if isinstance(rt, RootlessRuntime):  # on the holder's private tmpfs
        return rt.holder.sandbox_netns_outside(name)
    return rt.netns_path(name)


def _burrows_own(pid: int) -> bool:
    """The forwarder's dialer, caught in the sandbox's netns while it makes a socket there:
    it serves every sandbox's ports, and leaves on its own (rootless.ports.dialer)."""
    from rootless.ports.dialer import TITLE as DIALER_TITLE

    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().startswith(DIALER_TITLE.encode())
    except OSError:
        return False


def sandbox_pids(w: World, name: str) -> list[int]:
    """Processes running in the sandbox's network namespace (this user's, or root's): what
    `burrow exec` started there, and what those started."""
    from rootless.rootful import pids_in_netns

    rt = w.current()
    if rt is None:
        return []
    try:
        inode = os.stat(_netns_outside(rt, name)).st_ino
    except OSError:
        return []
    if inode == os.stat("/proc/self/ns/net").st_ino:
        return []
    return [pid for pid in pids_in_netns(inode) if not _burrows_own(pid)]


def stop_sandbox_processes(w: World, name: str, grace: float = STOP_GRACE) -> None:
    """SIGTERM to everything running in the sandbox, SIGKILL to what is left after `grace`
    seconds (Podman's stop, with a shorter timeout)."""
    stop_all([r for r in map(ProcRef.of, sandbox_pids(w, name)) if r is not None], grace)


def remove(w: World, name: str, *, last_stops_world: bool = True) -> bool:
    """Remove a sandbox; when it was the last one, stop the whole world. True if it did.

    What still runs in it is stopped first (as `podman rm -f` stops a running container):
    a process left there would keep the namespace, and with it the sandbox's addresses'
    routes and sockets, alive after burrow forgot it, with nothing left to remove it."""
    from rootless.status import sandbox_state

    store = Store(w.paths)
    rec = store.sandbox(name)
    rt = w.current()
    errors: list[str] = []
    if rt is not None and sandbox_state(rec, rt) != LOST:
        stop_sandbox_processes(w, name)
        errors = teardown_sandbox(rt, rec, store)
    elif rt is not None and rec.world == rt.world_id:
        teardown_sandbox(rt, rec, store)  # best effort: what a restore that died left
    # (A sandbox lost with a dead world has nothing in the current one to tear down.)
    with store.lock():
        store.delete_sandbox(name)
        last = not store.sandboxes()
    if errors:
        raise BurrowError(f"remove sandbox {name}: " + "; ".join(errors))
    if last and last_stops_world and rt is not None:
        w.teardown()
        return True
    return False


def _live(w: World, store: Store, name: str) -> tuple[Runtime, SandboxRecord]:
    from rootless.status import sandbox_state

    rec = store.sandbox(name)
    rt = require(w)
    if sandbox_state(rec, rt) != RUNNING:
        raise BurrowError(f"sandbox {name} is {sandbox_state(rec, rt)}; run `burrow up` to "
                          "bring it back first")
    return rt, rec


def connect(w: World, att: Attach, name: str) -> None:
    store = Store(w.paths)
    rt, _ = _live(w, store, name)
    with store.lock():
        rec = store.sandbox(name)
        if att.network in rec.network_names:
            raise BurrowError(f"sandbox {name} is already on network {att.network}")
        net = store.network(att.network)
        used_if = {a.interface_name for _, a in rec.networks}
        if att.interface in used_if:
            raise BurrowError(f"sandbox {name} already has an interface {att.interface}; "
                              "pick another interface_name")
        ifname = att.interface or next(f"eth{i}" for i in range(10000)
                                       if f"eth{i}" not in used_if)
        ips = netconf.allocate(net, store.used_ips(att.network), att.ips)
        before = rec
        rec = rec.replace(networks=(*rec.networks, (att.network, Attachment(
            ifname, tuple(ips), att.aliases, att.mac))))
        store.save_sandbox(rec)
    with ExitStack() as undo:
        undo.callback(_put_back, store, before)
        status = netavark(rt, "setup", rec.netns or "", options(rt, rec, store, [att.network]))
        undo.pop_all()
    rec = rec.replace(status={**rec.status, **status})
    store.save_sandbox(rec)
    rt.ports.retarget(rec.to_json())
    write_resolv(store, rec, rt)


def _put_back(store: Store, rec: SandboxRecord) -> None:
    with store.lock():
        store.save_sandbox(rec)


def disconnect(w: World, network: str, name: str) -> None:
    store = Store(w.paths)
    rt, rec = _live(w, store, name)
    if network not in rec.network_names:
        raise BurrowError(f"sandbox {name} is not on network {network}")
    netavark(rt, "teardown", rec.netns or "", options(rt, rec, store, [network]))
    with store.lock():
        rec = store.sandbox(name)
        rec = rec.replace(networks=tuple((n, a) for n, a in rec.networks if n != network),
                          status={k: v for k, v in rec.status.items() if k != network})
        store.save_sandbox(rec)
    rt.ports.retarget(rec.to_json())
    write_resolv(store, rec, rt)


def _engine_mac(block: Any) -> str | None:
    """The MAC the engine reported for a network's one interface (its setup status)."""
    ifaces = block.get("interfaces") if isinstance(block, dict) else None
    for info in (ifaces or {}).values():
        mac = info.get("mac_address") if isinstance(info, dict) else None
        return mac if isinstance(mac, str) else None
    return None


def reload(w: World, name: str) -> None:
    """`network reload`: the engine's teardown, then setup, of every network of a running
    sandbox (as Podman does), with the same addresses and MACs; a firewall that was flushed
    or lost its rules gets them back."""
    store = Store(w.paths)
    rt, rec = _live(w, store, name)
    if not rec.networks:
        return
    macs = {n: _engine_mac(rec.status.get(n)) for n, _ in rec.networks}
    # Keep the MACs the engine made up, so neighbours' ARP caches stay right.
    pinned = rec.replace(networks=tuple(
        (n, a if a.static_mac or not macs.get(n) else dataclasses.replace(
            a, static_mac=macs[n])) for n, a in rec.networks))
    try:
        netavark(rt, "teardown", rec.netns or "", options(rt, rec, store))
    except BurrowError:
        pass  # what is already gone need not be torn down; setup says if it cannot recover
    status = netavark(rt, "setup", rec.netns or "", options(rt, pinned, store))
    with store.lock():
        rec = store.sandbox(name).replace(status=status)
        store.save_sandbox(rec)
    write_resolv(store, rec, rt)


def write_resolv(store: Store, rec: SandboxRecord, rt: Runtime) -> None:
    """The files `burrow exec` mounts over /etc: resolv.conf, hosts and (with --hostname)
    hostname, written as Podman writes them (`resolv_conf`, `hosts_file`). Written in place
    (a running `burrow exec` has them bind-mounted), so a writer killed half-way leaves one
    empty: `burrow up` writes those again (rootless.recover)."""
    store.file(rec.name, RESOLV).write_text(resolv_conf(rec, rt.default_dns()))
    store.file(rec.name, HOSTS).write_text(hosts_file(rec))
    if rec.hostname:
        store.file(rec.name, HOSTNAME).write_text(rec.hostname + "\n")


def etc_files_cut(store: Store, rec: SandboxRecord) -> bool:
    """Whether a file write_resolv writes is missing or empty (none ever is when written)."""
    for suffix in (RESOLV, HOSTS, *((HOSTNAME,) if rec.hostname else ())):
        try:
            if store.file(rec.name, suffix).stat().st_size == 0:
                return True
        except FileNotFoundError:
            return True
    return False


def resolv_conf(rec: SandboxRecord, default_dns: Sequence[str]) -> str:
    """burrow-dns on each network's gateways, then --dns; the networks' search domains
    (`dns.podman`) then --dns-search (`.`: no search line at all); --dns-option."""
    servers: list[str] = []
    search: list[str] = []
    for block in rec.status.values():
        servers += [s for s in block.get("dns_server_ips", []) if s not in servers]
        search += [s for s in block.get("dns_search_domains", []) if s not in search]
    servers += [d for d in rec.dns if d not in servers]
    if not servers:
        servers = list(default_dns)
    search += [d for d in rec.dns_search if d not in search]
    if "." in rec.dns_search:
        search = []
    lines = [f"search {' '.join(search)}"] if search else []
    lines += [f"nameserver {s}" for s in servers[:3]]
    if rec.dns_options:
        lines.append(f"options {' '.join(rec.dns_options)}")
    return "\n".join(lines) + "\n"


def hosts_file(rec: SandboxRecord) -> str:
    """localhost, then --add-host entries, then the sandbox's own addresses with its
    hostname, name and aliases."""
    hosts = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    hosts += [f"{h.ip}\t{h.name}" for h in rec.hosts]
    own = list(dict.fromkeys([rec.hostname or rec.name, rec.name]))
    for _, att in rec.networks:
        names = " ".join([*own, *att.aliases])
        hosts += [f"{ip}\t{names}" for ip in att.static_ips]
    return "\n".join(hosts) + "\n"


def exec_argv(w: World, name: str, cmd: Sequence[str]) -> list[str]:
    store = Store(w.paths)
    rt, rec = _live(w, store, name)
    resolv, hosts = store.file(name, RESOLV), store.file(name, HOSTS)
    # Into the sandbox's netns, then a private mount ns for its resolv.conf and hosts.
    script = ('r=$1; h=$2; shift 2; mount --bind "$r" /etc/resolv.conf && '
              'mount --bind "$h" /etc/hosts && exec "$@"')
    unshare = ["unshare", "--mount", "--propagation", "private"]
    if rec.hostname:
        # --hostname: a UTS namespace of its own too (sethostname(2) by hostname(1): the
        # world's root may not write the host-owned /proc/sys), and its /etc/hostname.
        unshare.append("--uts")
        script = ('r=$1; h=$2; n=$3; f=$4; shift 4; hostname "$n" && '
                  'mount --bind "$f" /etc/hostname && mount --bind "$r" /etc/resolv.conf && '
                  'mount --bind "$h" /etc/hosts && exec "$@"')
        return [*rt.exec_prefix(name), *unshare, "--", "sh", "-c", script, "sh", str(resolv),
                str(hosts), rec.hostname, str(store.file(name, HOSTNAME)), *cmd]
    return [*rt.exec_prefix(name), *unshare, "--", "sh", "-c", script, "sh", str(resolv),
            str(hosts), *cmd]
