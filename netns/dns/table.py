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

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from netns.dns.config import Container, Network

log = logging.getLogger("netns.dns")
Records = tuple[tuple[str, ...], tuple[str, ...]]  # (IPv4s, IPv6s)
# The per-client budgets key on a container's source address. Any other source shares this
# one: on the host every local user can send from any of 127.0.0.0/8 (and every address of the
# host), so keyed per address, one user with a few hundred of them held the whole upstream and
# TCP totals, and every container's forwarded query was shed.
OTHERS = "other sources"


@dataclass(frozen=True, eq=False)
class View:
    names: Mapping[str, Records]  # lower-case name (dots allowed: web.v1) -> addresses
    reverse: Mapping[str, tuple[str, ...]]  # canonical IP text -> names and aliases
    # How many container lines hold a name (an address), for those more than one line holds
    # (one line: the name is in `names`; none: it is not): what tells whether removing some
    # containers in place (_remove) gives exactly what merging the others again would.
    name_holders: dict[str, int] = field(default_factory=dict)
    ip_holders: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Scope:
    """eq=False: identity hashing, which is both exact (interned) and fast as a dict key."""

    view: View
    upstreams: tuple[str, ...]  # explicit servers; empty means "the host's resolv.conf"
    may_forward: bool  # False when every network of the requester is internal


Who = tuple[frozenset[str], tuple[str, ...]]  # a container's networks, its own DNS servers
Index = dict[str, tuple[Container, ...]]  # container id -> its lines in one network
Grown = Mapping[str, tuple[Network, tuple[Container, ...]]]  # name -> (what grew, the new lines)
Shrunk = Mapping[str, tuple[Network, int, int]]  # name -> (what shrank, [start:stop] of it gone)


@dataclass(frozen=True)
class Table:
    """What queries read, plus what `update` needs to apply one network's change without
    revisiting the others. The dicts of every container (`by_source`, `owners`) and of every
    network (`nets`, `index`) are handed on from table to table by `update` and changed in
    place, so a change never copies the other networks' entries.

    A container's source IP maps to its `Who` (`by_source`) and that to its Scope (`by_who`):
    two lookups, so that a name added to a network of 500 containers re-points one scope, not
    500 addresses."""

    by_source: dict[str, Who]
    by_who: Mapping[Who, Scope]
    by_listen: Mapping[str, Scope]
    networks: tuple[str, ...] = field(default=())
    nets: dict[str, Network] = field(default_factory=dict)
    index: dict[str, Index] = field(default_factory=dict)
    owners: dict[str, frozenset[str]] = field(default_factory=dict)  # ctr id -> networks
    listen_nets: Mapping[str, frozenset[str]] = field(default_factory=dict)
    views: Mapping[frozenset[str], View] = field(default_factory=dict)

    @property
    def listen_ips(self) -> tuple[str, ...]:
        return tuple(self.by_listen)

    def budget_key(self, source: str) -> str:
        """Whose share of the per-client caps (limits.Limits) a query from `source` uses: a
        container's own; every other source shares one (OTHERS)."""
        return source if source in self.by_source else OTHERS

    def scope_of(self, source: str) -> Scope | None:
        who = self.by_source.get(source)
        return None if who is None else self.by_who[who]

    def scope(self, source: str, listen_ip: str) -> Scope:
        return self.scope_of(source) or self.by_listen[listen_ip]


EMPTY = Table({}, {}, {})  # never updated in place: `update` starts from copies of it


def _uniq(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _add(view: View | None, containers: Iterable[Container]) -> View:
    """`view` (None: a new one) with `containers` added, in place: only their names are
    touched. (Every scope that holds `view` is replaced in the same update.)"""
    if view is None:
        view = View({}, {})
    names, reverse = view.names, view.reverse
    assert isinstance(names, dict) and isinstance(reverse, dict)
    for ctr in containers:
        for name in ctr.names:
            v4, v6 = names.get(name, ((), ()))
            if name in names:
                view.name_holders[name] = view.name_holders.get(name, 1) + 1
            names[name] = (_uniq(v4 + ctr.v4), _uniq(v6 + ctr.v6))
        for ip in ctr.v4 + ctr.v6:
            if ip in reverse:
                view.ip_holders[ip] = view.ip_holders.get(ip, 1) + 1
            reverse[ip] = _uniq(reverse.get(ip, ()) + ctr.names)
    return view


def _removable(view: View, gone: Iterable[Container]) -> bool:
    """Whether `_remove` is exact: no container line left in the view holds an address of
    those that go (else a name's addresses would have to be merged again, in their order)."""
    lost: dict[str, int] = {}
    for ctr in gone:
        for ip in ctr.v4 + ctr.v6:
            lost[ip] = lost.get(ip, 0) + 1
    return all(view.ip_holders.get(ip, 1) == k for ip, k in lost.items())


def _remove(view: View, gone: Iterable[Container]) -> View:
    """`view` without the container lines `gone`, in place: only their names and addresses
    are touched. Call only when `_removable`: their addresses are theirs alone, so dropping
    them from a name another line still holds keeps the rest in the order a merge gives."""
    names, reverse = view.names, view.reverse
    assert isinstance(names, dict) and isinstance(reverse, dict)
    for ctr in gone:
        ips = frozenset(ctr.v4 + ctr.v6)
        for ip in ips:
            reverse.pop(ip, None)
            view.ip_holders.pop(ip, None)
        for name in ctr.names:
            left = view.name_holders.pop(name, 1) - 1
            if left == 0:
                names.pop(name, None)
                continue
            if left > 1:
                view.name_holders[name] = left
            v4, v6 = names[name]
            names[name] = (tuple(ip for ip in v4 if ip not in ips),
                           tuple(ip for ip in v6 if ip not in ips))
    return view


def _index(net: Network) -> Index:
    out: dict[str, list[Container]] = {}
    for ctr in net.containers:
        out.setdefault(ctr.id, []).append(ctr)
    return {k: tuple(v) for k, v in out.items()}


def _extend(index: Index, tail: Iterable[Container]) -> Index:
    for ctr in tail:
        index[ctr.id] = index.get(ctr.id, ()) + (ctr,)
    return index


def _drop(index: Index, gone: Iterable[Container]) -> tuple[Index, Index]:
    """`index` without the containers of `gone` (in place), and their entries as they were."""
    return index, {i: index.pop(i) for i in {c.id for c in gone}}


def appended(old: Network | None, new: Network | None) -> tuple[Container, ...] | None:
    """The containers `new` adds at the end of `old` when that is its only change, else None."""
    if old is None or new is None or (old.listen_ips, old.dns_servers, old.internal) != (
            new.listen_ips, new.dns_servers, new.internal):
        return None
    n = len(old.containers)
    return new.containers[n:] if new.containers[:n] == old.containers else None


def build(networks: Iterable[Network]) -> Table:
    return update(EMPTY, {n.name: n for n in networks})


def _grown(old: Table, changed: Mapping[str, Network | None],
           hints: Grown) -> dict[str, tuple[Container, ...]]:
    """The changed networks that only had containers appended, with those containers: from
    the file reader's word when it is about the very network the table has (O(new lines)),
    else by comparing the container lists."""
    out = {}
    for n, new in changed.items():
        hint, have = hints.get(n), old.nets.get(n)
        if hint is not None and have is not None and new is not None and hint[0] is have and (
                len(new.containers) == len(have.containers) + len(hint[1])):
            out[n] = hint[1]
        elif (tail := appended(have, new)) is not None:
            out[n] = tail
    return out


def _shrunk(old: Table, changed: Mapping[str, Network | None], hints: Shrunk,
            grown: Mapping[str, tuple[Container, ...]]) -> dict[str, tuple[Container, ...]]:
    """The changed networks that only lost a run of containers, with those containers, where
    that can be applied in place exactly: the file reader's word is about the very network the
    table has, each container that went lost all its lines there, and its own view holds none
    of their addresses on another line (`_removable`). The others are rebuilt as any change."""
    out = {}
    for n, new in changed.items():
        hint, have = hints.get(n), old.nets.get(n)
        if hint is None or have is None or new is None or hint[0] is not have or n in grown:
            continue
        gone = have.containers[hint[1]:hint[2]]
        view = old.views.get(frozenset((n,)))
        lines: dict[str, int] = {}
        for ctr in gone:
            lines[ctr.id] = lines.get(ctr.id, 0) + 1
        ids = old.index.get(n, {})
        if (view is not None and len(new.containers) == len(have.containers) - len(gone)
                and (have.listen_ips, have.dns_servers, have.internal) == (
                    new.listen_ips, new.dns_servers, new.internal)
                and all(len(ids.get(i, ())) == k for i, k in lines.items())
                and _removable(view, gone)):
            out[n] = gone
    return out


class _Scopes:
    """The scopes of one table. Views of networks that did not change are kept; a view with
    one changed network that only grew (or only lost containers) is changed in place instead
    of merged again, where that gives what the merge would: new lines go last, so only into a
    view whose networks all sort before that one (a merge takes them in name order); lines
    that go, where no line left in that view holds their addresses. Any other view is merged
    again when a scope needs it."""

    def __init__(self, old: Table, nets: Mapping[str, Network], grown: Mapping[str, tuple[Container, ...]],
                 cut: Mapping[str, tuple[Container, ...]], changed: frozenset[str]) -> None:  # fmt: skip
        self.nets = nets
        self.views: dict[frozenset[str], View] = {}
        for key, view in old.views.items():
            hit = key & changed
            one = next(iter(hit)) if len(hit) == 1 else ""  # "": no network is named that
            if not hit:
                self.views[key] = view
            elif one in grown and one == max(key):
                self.views[key] = _add(view, grown[one])
            elif one in cut and _removable(view, cut[one]):
                self.views[key] = _remove(view, cut[one])
        self.made: dict[tuple[Who, bool], Scope] = {}

    def get(self, members: frozenset[str], ctr_dns: tuple[str, ...]) -> Scope:
        # Internal networks contribute names but never upstreams (spec §1.3, HEAD).
        external = [self.nets[m] for m in sorted(members) if not self.nets[m].internal]
        upstreams = ctr_dns or _uniq(s for n in external for s in n.dns_servers)
        key = ((members, upstreams), bool(external))
        found = self.made.get(key)
        if found is None:
            view = self.views.get(members)
            if view is None:
                view = self.views[members] = _add(None, (
                    c for m in sorted(members) for c in self.nets[m].containers))
            found = self.made[key] = Scope(view, upstreams, bool(external))
        return found


def update(old: Table, changed: Mapping[str, Network | None], hints: Grown | None = None,
           shrunk: Shrunk | None = None) -> Table:
    """A new table with `changed` applied (None: the network is gone). `old` is used up: its
    dicts are updated in place and handed on (the server swaps the new table in and never
    reads the old one again), so the work is proportional to what changed: a network that
    only grew (`hints`: netns/dns/files.py's word for it) costs its new lines, one that only
    lost a run of containers (`shrunk`, the reader's word too: a teardown) costs those;
    otherwise its containers get new scopes; no other network's entries are copied or
    rebuilt. A container is identified by its id across files; all its IPs share all its
    networks."""
    if old is EMPTY:
        old = Table({}, {}, {})
    grown = _grown(old, changed, hints or {})
    cut = _shrunk(old, changed, shrunk or {}, grown)
    before = {k: old.nets.get(k) for k in changed}  # their listen addresses, for _listen
    nets = old.nets
    for k, v in changed.items():
        if v is None:
            nets.pop(k, None)
        else:
            nets[k] = v
    try:
        return _apply(old, changed, grown, cut, before)
    except Exception:  # noqa: BLE001 - a bug here must not leave a half-updated table
        log.exception("incremental DNS table update failed; rebuilding it whole")
        return update(EMPTY, dict(nets))


def _apply(old: Table, changed: Mapping[str, Network | None],
           grown: Mapping[str, tuple[Container, ...]], cut: Mapping[str, tuple[Container, ...]],
           before: Mapping[str, Network | None]) -> Table:
    names = frozenset(changed)
    nets = old.nets  # already updated
    index = old.index
    old_index = {k: index.pop(k) for k in names if k in index}  # what _unlink must unlink
    for k, v in changed.items():  # a grown network: its old index plus the new lines
        if v is None:
            continue
        if k in grown:
            index[k] = _extend(old_index[k], grown[k])
        elif k in cut:  # _unlink reads only the containers that went: keep just theirs
            index[k], old_index[k] = _drop(old_index[k], cut[k])
        else:
            index[k] = _index(v)
    scopes = _Scopes(old, nets, grown, cut, names)

    joined: dict[str, set[str]] = {}  # container id -> the changed networks it is now on
    affected: set[str] = set()
    for n in names:
        if n in cut:  # the containers that went; the others keep their Who
            affected.update(old_index[n])
            continue
        tail = grown.get(n)
        ids = {c.id for c in tail} if tail is not None else index.get(n, {}).keys()
        for ctr_id in ids:
            joined.setdefault(ctr_id, set()).add(n)
        affected.update(ids if tail is not None else old_index.get(n, {}).keys() | ids)
    by_source = old.by_source
    owners = old.owners
    # Scopes of changed networks are made again (a grown network's containers keep their Who,
    # which now gets the new view); all others are kept as they are.
    whos = {w for w in old.by_who if w[0] & names and w[0] <= nets.keys()}
    for ctr_id in affected:  # all that goes first: an address two containers had (a stale
        _unlink(ctr_id, old_index, index, names, by_source, owners)  # line) stays the other's
    for ctr_id in affected:
        who = _link(ctr_id, nets, index, joined.get(ctr_id, set()), names, by_source, owners)
        if who is not None:
            whos.add(who)
    by_who = {w: sc for w, sc in old.by_who.items() if not w[0] & names}
    by_who.update({w: scopes.get(*w) for w in whos})
    by_listen, listen_nets = _listen(old, before, nets, names, scopes)
    return Table(by_source, by_who, by_listen, tuple(sorted(nets)), nets, index, owners,
                 listen_nets, scopes.views)


def _unlink(ctr_id: str, old_index: Mapping[str, Index], index: Mapping[str, Index],
            names: frozenset[str], by_source: dict[str, Who], owners: Mapping[str, frozenset[str]]) -> None:
    """Drop the container's addresses as they were. `owners` still holds its networks before
    this change; `old_index` the changed networks' indexes before it (the others' are in
    `index`, unchanged)."""
    for m in owners.get(ctr_id, frozenset()):
        for ctr in (old_index[m] if m in names else index[m])[ctr_id]:
            for ip in ctr.v4 + ctr.v6:
                by_source.pop(ip, None)


def _link(ctr_id: str, nets: Mapping[str, Network], index: Mapping[str, Index], joined: set[str],
          names: frozenset[str], by_source: dict[str, Who], owners: dict[str, frozenset[str]]) -> Who | None:
    """The container's addresses now name its current networks (or nothing, if it is gone)."""
    was = owners.get(ctr_id, frozenset())
    members = (was - names) | joined
    members = frozenset(m for m in members if ctr_id in index.get(m, {}))
    if not members:
        owners.pop(ctr_id, None)
        return None
    owners[ctr_id] = members
    ctrs = [(m, c) for m in sorted(members) for c in index[m][ctr_id]]
    dns = next((c.dns_servers for m, c in ctrs if c.dns_servers and not nets[m].internal), ())
    who = (members, dns)
    for _, c in ctrs:
        for ip in c.v4 + c.v6:
            by_source[ip] = who
    return who


def _listen(old: Table, before: Mapping[str, Network | None], nets: Mapping[str, Network],
            names: frozenset[str], scopes: _Scopes) -> tuple[dict[str, Scope], dict[str, frozenset[str]]]:
    listen_nets = dict(old.listen_nets)  # one entry per listen address: a few, copied
    by_listen = dict(old.by_listen)
    touched = {ip for n in names for net in (before.get(n), nets.get(n)) if net is not None
               for ip in net.listen_ips}
    for ip in touched:
        ms = frozenset(n for n in listen_nets.get(ip, frozenset()) - names if n in nets) | {
            n for n in names if n in nets and ip in nets[n].listen_ips}
        if ms:
            listen_nets[ip] = ms
            by_listen[ip] = scopes.get(ms, ())
        else:
            listen_nets.pop(ip, None)
            by_listen.pop(ip, None)
    return by_listen, listen_nets
