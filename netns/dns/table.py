"""The immutable record table and who may see what.

Visibility is decided by the querier's source IP (spec §1.4):
- a known container sees every network it is on (all of its lines, across files, keyed by
  container id), with the records of all those networks merged;
- an unknown source sees only the network(s) owning the listen address it asked.

Every requester therefore maps to a `Scope`: the merged `View` of its networks plus how it may
forward. Scopes are interned, so the 1,000 containers of one network share one object, and a
scope's identity is a cheap, exact cache key for the fast path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from netns.dns.config import Network

Records = tuple[tuple[str, ...], tuple[str, ...]]  # (IPv4s, IPv6s)


@dataclass(frozen=True, eq=False)
class View:
    names: Mapping[str, Records]  # lower-case single label -> addresses
    reverse: Mapping[str, tuple[str, ...]]  # canonical IP text -> names and aliases


@dataclass(frozen=True, eq=False)
class Scope:
    """eq=False: identity hashing, which is both exact (interned) and fast as a dict key."""

    view: View
    upstreams: tuple[str, ...]  # explicit servers; empty means "the host's resolv.conf"
    may_forward: bool  # False when every network of the requester is internal


@dataclass(frozen=True)
class Table:
    by_source: Mapping[str, Scope]
    by_listen: Mapping[str, Scope]
    networks: tuple[str, ...] = field(default=())

    @property
    def listen_ips(self) -> tuple[str, ...]:
        return tuple(self.by_listen)

    def scope(self, source: str, listen_ip: str) -> Scope:
        return self.by_source.get(source) or self.by_listen[listen_ip]


def _uniq(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _merge(networks: Iterable[Network]) -> View:
    v4: dict[str, list[str]] = {}
    v6: dict[str, list[str]] = {}
    reverse: dict[str, list[str]] = {}
    for net in networks:
        for ctr in net.containers:
            for name in ctr.names:
                v4.setdefault(name, []).extend(ctr.v4)
                v6.setdefault(name, []).extend(ctr.v6)
            for ip in ctr.v4 + ctr.v6:
                reverse.setdefault(ip, []).extend(ctr.names)
    names = {n: (_uniq(v4[n]), _uniq(v6[n])) for n in v4}
    return View(names, {ip: _uniq(ns) for ip, ns in reverse.items()})


def build(networks: Iterable[Network]) -> Table:
    nets = {n.name: n for n in networks}
    views: dict[frozenset[str], View] = {}
    scopes: dict[tuple[frozenset[str], tuple[str, ...], bool], Scope] = {}

    def scope_for(members: frozenset[str], ctr_dns: tuple[str, ...]) -> Scope:
        # Internal networks contribute names but never upstreams (spec §1.3, HEAD).
        external = [nets[m] for m in sorted(members) if not nets[m].internal]
        upstreams = ctr_dns or _uniq(s for n in external for s in n.dns_servers)
        key = (members, upstreams, bool(external))
        if key not in scopes:
            if members not in views:
                views[members] = _merge(nets[m] for m in sorted(members))
            scopes[key] = Scope(views[members], upstreams, bool(external))
        return scopes[key]

    # A container is identified by its id across files; all its IPs share all its networks.
    member_of: dict[str, set[str]] = {}
    ips_of: dict[str, list[str]] = {}
    dns_of: dict[str, tuple[str, ...]] = {}
    for net in nets.values():
        for ctr in net.containers:
            member_of.setdefault(ctr.id, set()).add(net.name)
            ips_of.setdefault(ctr.id, []).extend(ctr.v4 + ctr.v6)
            if ctr.dns_servers and not net.internal and ctr.id not in dns_of:
                dns_of[ctr.id] = ctr.dns_servers

    by_source: dict[str, Scope] = {}
    for ctr_id, members in member_of.items():
        sc = scope_for(frozenset(members), dns_of.get(ctr_id, ()))
        for ip in ips_of[ctr_id]:
            by_source[ip] = sc

    listen_nets: dict[str, set[str]] = {}
    for net in nets.values():
        for ip in net.listen_ips:
            listen_nets.setdefault(ip, set()).add(net.name)
    by_listen = {ip: scope_for(frozenset(ms), ()) for ip, ms in listen_nets.items()}
    return Table(by_source, by_listen, tuple(sorted(nets)))
