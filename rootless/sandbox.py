"""Sandboxes: network namespaces in the world (`rootless.backend.World`), attached to networks
by the engine.

A sandbox's netns is a bind mount on `<state>/netns/NAME` (rootless: on the holder's private
tmpfs, so it vanishes with the namespace), so it needs no process to stay alive. Commands run
in it through `burrow exec`, with a private mount namespace that shows them their own
resolv.conf and hosts. How its ports are published is the world's business (`Ports`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass

from netns import names
from netns.errors import BurrowError
from rootless import netconf
from rootless.backend import Runtime, World, require
from rootless.engine_call import netavark, options, teardown_sandbox
from rootless.ports.spec import PortSpec, overlaps
from rootless.procs import ProcRef
from rootless.records import LOST, RUNNING, Attachment, SandboxRecord
from rootless.store import HOSTS, RESOLV, Store


@dataclass(frozen=True)
class Attach:
    """`--network NET[:ip=..,ip6=..,mac=..,alias=..]`"""
    network: str
    ips: tuple[str, ...] = ()
    mac: str | None = None
    aliases: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Attach:
        name, _, opts = text.partition(":")
        netconf.check_name(name, "network")
        ips: list[str] = []
        aliases: list[str] = []
        mac = None
        for kv in filter(None, opts.split(",")):
            k, sep, v = kv.partition("=")
            if not sep:
                raise BurrowError(f"invalid --network option {kv!r}: expected KEY=VALUE with "
                                  "ip, ip6, mac or alias")
            if k in ("ip", "ip6"):
                try:
                    addr = ipaddress.ip_address(v)
                except ValueError:
                    raise BurrowError(f"invalid {k}={v}: not an IP address") from None
                if (addr.version == 6) != (k == "ip6"):
                    raise BurrowError(f"invalid {k}={v}: use ip= for IPv4 and ip6= for IPv6")
                ips.append(str(addr))
            elif k == "mac":
                mac = names.mac(v, "mac=")
            elif k == "alias":
                aliases.append(netconf.check_name(v, "alias"))
            else:
                raise BurrowError(f"unknown --network option {k!r}; use ip, ip6, mac or alias")
        return cls(name, tuple(ips), mac, tuple(aliases))


def _ensure_default(store: Store, mtu: int | None) -> None:
    if netconf.DEFAULT_NETWORK not in store.networks():
        store.save_network(netconf.make_network(netconf.default_request(), store.networks(), mtu))


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


def _reserve(store: Store, name: str, attaches: Sequence[Attach], ports: Sequence[PortSpec],
             dns: Sequence[str], mtu: int | None) -> SandboxRecord:
    """Choose addresses and write the record (`creating`), all under the IPAM lock."""
    with store.lock():
        if store.exists(name):
            raise BurrowError(f"sandbox {name} already exists; remove it with "
                              f"`burrow sandbox rm {name}` or pick another name")
        if any(a.network == netconf.DEFAULT_NETWORK for a in attaches):
            _ensure_default(store, mtu)
        nets = {a.network: store.network(a.network) for a in attaches}
        if ports and all(n.get("driver", "bridge") != "bridge" for n in nets.values()):
            raise BurrowError(f"-p needs a bridge network: {', '.join(nets)} "
                              f"{'is' if len(nets) == 1 else 'are'} macvlan, where the LAN "
                              "reaches the sandbox at its own address; drop -p, or add a "
                              "bridge network")
        networks = tuple(
            (a.network, Attachment(f"eth{i}", tuple(netconf.allocate(
                nets[a.network], store.used_ips(a.network), a.ips)), a.aliases, a.mac))
            for i, a in enumerate(attaches))
        _port_clash(store, ports)
        rec = SandboxRecord(
            name=name,
            id=hashlib.sha256(f"{name}{time.time_ns()}{os.getpid()}".encode()).hexdigest(),
            networks=networks, ports=tuple(ports), dns=tuple(dns), created=time.time(),
            creator=ProcRef.of(os.getpid()) or ProcRef(os.getpid(), 0))
        store.save_sandbox(rec)  # the reservation: addresses are now taken
        return rec


def create(w: World, name: str, attaches: Sequence[Attach], ports: Sequence[PortSpec],
           dns: Sequence[str], mtu: int | None) -> SandboxRecord:
    from rootless.recover import converge

    attaches = list(attaches) or [Attach(netconf.DEFAULT_NETWORK)]
    _check_create(name, attaches, dns)
    store = Store(w.paths)
    rec = _reserve(store, name, attaches, ports, dns, mtu)
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


def remove(w: World, name: str, *, last_stops_world: bool = True) -> bool:
    """Remove a sandbox; when it was the last one, stop the whole world. True if it did."""
    from rootless.status import sandbox_state

    store = Store(w.paths)
    rec = store.sandbox(name)
    rt = w.current()
    errors: list[str] = []
    if rt is not None and sandbox_state(rec, rt) != LOST:
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
        ifname = next(f"eth{i}" for i in range(100) if f"eth{i}" not in used_if)
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
    write_resolv(store, rec, rt)


def write_resolv(store: Store, rec: SandboxRecord, rt: Runtime) -> None:
    """resolv.conf: burrow-dns on each network's gateways, `dns.podman` search; hosts: self."""
    servers: list[str] = []
    search: list[str] = []
    for block in rec.status.values():
        servers += [s for s in block.get("dns_server_ips", []) if s not in servers]
        search += [s for s in block.get("dns_search_domains", []) if s not in search]
    servers += [d for d in rec.dns if d not in servers]
    if not servers:
        servers = rt.default_dns()
    lines = [f"search {' '.join(search)}"] if search else []
    lines += [f"nameserver {s}" for s in servers[:3]]
    store.file(rec.name, RESOLV).write_text("\n".join(lines) + "\n")
    hosts = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    for _, att in rec.networks:
        names = " ".join([rec.name, *att.aliases])
        hosts += [f"{ip}\t{names}" for ip in att.static_ips]
    store.file(rec.name, HOSTS).write_text("\n".join(hosts) + "\n")


def exec_argv(w: World, name: str, cmd: Sequence[str]) -> list[str]:
    store = Store(w.paths)
    rt, _ = _live(w, store, name)
    resolv, hosts = store.file(name, RESOLV), store.file(name, HOSTS)
    # Into the sandbox's netns, then a private mount ns for its resolv.conf and hosts.
    script = ('r=$1; h=$2; shift 2; mount --bind "$r" /etc/resolv.conf && '
              'mount --bind "$h" /etc/hosts && exec "$@"')
    return [*rt.exec_prefix(name), "unshare", "--mount", "--propagation", "private", "--",
            "sh", "-c", script, "sh", str(resolv), str(hosts), *cmd]
