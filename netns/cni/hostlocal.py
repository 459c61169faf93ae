"""Address allocation persisted the way CNI's host-local plugin does it, so it survives restarts.

Layout under `<dataDir>/<network>/` (host-local's own, so its tools and habits still apply):
one file per address in use, named by the address, holding `<container id>\\r\\n<ifname>`;
`last_reserved_ip.<N>` per range set (where the next search starts); `lock` (an flock held for
every read-modify-write). The engine's `host-local` IPAM then gets these as static IPs.

Why here and not in `netns/ipam.py`: the engine's IPAM serves Podman, which allocates
addresses itself and sends them; CNI has no such caller, so the CNI front door allocates.
"""

from __future__ import annotations

import errno
import ipaddress
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from netns import locks, statefiles
from netns.cni import errors as E
from netns.cni.config import Range
from netns.cni.errors import CniError
from netns.schema import IPAddress

LINE_BREAK = "\r\n"  # host-local's separator between container id and ifname
Owner = tuple[str, str]  # (container id, ifname)


def _io(what: str, exc: OSError) -> CniError:
    return CniError(E.IO_FAILURE, f"{what}: {exc.strerror or exc}")


class Store:
    def __init__(self, data_dir: str, network: str) -> None:
        self.dir = Path(data_dir) / network

    @contextmanager
    def locked(self) -> Iterator[None]:
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        except OSError as exc:
            raise _io(f"IPAM state {self.dir}", exc) from None
        with locks.locked(self.dir / statefiles.CNI_IPAM_LOCK, what="burrow-cni IPAM"):
            yield

    def taken(self) -> set[IPAddress]:
        """Every address in use, from the file names alone (no file is read)."""
        try:
            entries = os.listdir(self.dir)
        except FileNotFoundError:
            return set()
        except OSError as exc:
            raise _io(f"IPAM state {self.dir}", exc) from None
        out: set[IPAddress] = set()
        for entry in entries:
            try:
                out.add(ipaddress.ip_address(entry))
            except ValueError:
                continue  # lock, last_reserved_ip.N, anything else
        return out

    def owner(self, ip: IPAddress) -> Owner | None:
        """Who holds `ip`: one file, looked up by its name."""
        try:
            text = statefiles.read_bytes(self.dir / str(ip)).decode(errors="replace")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _io(f"IPAM state {self.dir / str(ip)}", exc) from None
        cid, _, ifname = text.partition(LINE_BREAK)
        return cid.strip(), ifname.strip()

    def allocations(self) -> dict[IPAddress, Owner]:
        """Every address with its owner: reads every file (DEL, GC and CHECK look an owner up
        this way, as host-local's GetByID and ReleaseByID do; an ADD does not)."""
        out: dict[IPAddress, Owner] = {}
        for ip in self.taken():
            who = self.owner(ip)
            if who is not None:
                out[ip] = who
        return out

    def owned(self, cid: str, ifname: str) -> list[IPAddress]:
        """What (cid, ifname) holds, from every file (when nothing says where to look)."""
        return [ip for ip, o in self.allocations().items() if _matches(o, (cid, ifname))]

    def holds(self, owner: Owner, ips: Iterable[IPAddress]) -> list[IPAddress]:
        """Of `ips`, those `owner` holds: one file read each, no other (DEL, with the addresses
        its attachment record names; GC, with those its one scan found)."""
        return [ip for ip in ips if (o := self.owner(ip)) is not None and _matches(o, owner)]

    def by_owner(self) -> dict[Owner, list[IPAddress]]:
        """Every allocation, grouped by owner: one read of every file (GC)."""
        out: dict[Owner, list[IPAddress]] = {}
        for ip, who in self.allocations().items():
            out.setdefault(who, []).append(ip)
        return out

    def reserve(self, ip: IPAddress, owner: Owner) -> bool:
        """False if the address is already taken (the file exists)."""
        try:
            fd = os.open(self.dir / str(ip), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            raise _io(f"reserve {ip}", exc) from None
        with os.fdopen(fd, "w") as f:
            f.write(owner[0] + LINE_BREAK + owner[1])
        return True

    def release(self, ips: Sequence[IPAddress]) -> None:
        for ip in ips:
            try:
                os.unlink(self.dir / str(ip))
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise _io(f"release {ip}", exc) from None

    def last_reserved(self, index: int) -> IPAddress | None:
        try:
            return ipaddress.ip_address(
                statefiles.read_text(self.dir / f"{statefiles.CNI_IPAM_LAST}{index}").strip())
        except (OSError, ValueError):
            return None

    def set_last_reserved(self, index: int, ip: IPAddress) -> None:
        path = self.dir / f"{statefiles.CNI_IPAM_LAST}{index}"
        try:
            statefiles.replace_text(path, str(ip))
        except OSError as exc:
            raise _io(f"write {path}", exc) from None


def _matches(found: Owner, owner: Owner) -> bool:
    # Files from old host-local versions hold only the id: they match any ifname.
    return found[0] == owner[0] and found[1] in (owner[1], "")


def _candidates(rs: Sequence[Range], after: IPAddress | None) -> Iterator[IPAddress]:
    """Every address of the set's ranges once, starting after `after` and wrapping around."""
    start_range, start_ip = 0, None
    if after is not None:
        for i, r in enumerate(rs):
            if after in r:
                start_range, start_ip = i, after + 1
                break
    order = list(range(start_range, len(rs))) + list(range(start_range))
    for n, i in enumerate(order):
        r = rs[i]
        ip = start_ip if n == 0 and start_ip is not None and start_ip in r else r.start
        while ip <= r.end:  # type: ignore[operator]
            yield ip
            ip += 1
    if start_ip is not None:  # the head of the first range, before where we started
        r = rs[start_range]
        ip = r.start
        while ip < start_ip:  # type: ignore[operator]
            yield ip
            ip += 1


def pick(rs: Sequence[Range], after: IPAddress | None, taken: set[IPAddress]) -> IPAddress | None:
    """The next free address of a range set; None when it is full.

    Bounded: among len(taken) + 2 candidates at least one is neither taken nor the gateway,
    so a big IPv6 range is never walked address by address.
    """
    gateways = {r.gateway for r in rs}
    limit = len(taken) + len(gateways) + 1
    for n, ip in enumerate(_candidates(rs, after)):
        if ip not in taken and ip not in gateways:
            return ip
        if n > limit:
            break
    return None


def allocate(
    store: Store, sets: Sequence[Sequence[Range]], owner: Owner, requested: Sequence[IPAddress],
    *, may_hold: bool = True,
) -> tuple[tuple[IPAddress, ...], tuple[IPAddress, ...]]:
    """One address per range set, under the store's lock: (all, newly reserved).

    A requested address goes to the set whose ranges hold it. An address this (container,
    ifname) already holds is kept (a repeated ADD must not take a second address, nor give the
    first one back when it fails). Finding those reads every allocation file, so a caller
    that knows the owner holds none (`may_hold=False`: the CNI front door, whose attachment
    record is written before any address) saves it: then no file is read but the one per
    requested address, and a free address is found as host-local finds it (below).
    """
    wanted = list(requested)
    held = [ip for ip, o in store.allocations().items()
            if o == owner or o == (owner[0], "")] if may_hold else []
    out: list[IPAddress] = []
    new: list[IPAddress] = []
    try:
        for index, rs in enumerate(sets):
            ip = _one(store, index, rs, owner, wanted, held)
            if ip not in held:
                new.append(ip)
            out.append(ip)
    except BaseException:
        store.release(new)
        raise
    if wanted:
        store.release(new)
        raise CniError(E.INVALID_CONFIG, f"requested IPs {[str(w) for w in wanted]} are in no range")
    return tuple(out), tuple(new)


def _one(store: Store, index: int, rs: Sequence[Range], owner: Owner, wanted: list[IPAddress],
         held: list[IPAddress]) -> IPAddress:  # fmt: skip
    mine = next((w for w in wanted if any(w in r for r in rs)), None)
    if mine is not None:
        wanted.remove(mine)
        if mine in held:
            return mine
        if mine in {r.gateway for r in rs}:
            raise CniError(E.INVALID_CONFIG, f"requested IP {mine} is the gateway")
        if not store.reserve(mine, owner):
            who = store.owner(mine)
            raise CniError(E.ENGINE_FAILURE, f"requested IP {mine} is already allocated "
                           f"to container {who[0] if who else '?'}")  # fmt: skip
        # host-local's store writes last_reserved_ip.N with every reservation, a requested
        # address's too: the next free one is searched for after it.
        store.set_last_reserved(index, mine)
        return mine
    kept = next((h for h in held if any(h in r for r in rs)), None)
    if kept is not None:
        return kept
    ip = _probe(store, index, rs, owner) or _crowded(store, index, rs, owner)
    store.set_last_reserved(index, ip)
    return ip


PROBES = 32  # addresses tried one by one before the names in use are listed


def _probe(store: Store, index: int, rs: Sequence[Range], owner: Owner) -> IPAddress | None:
    """host-local's own search: from after the last reserved address, each address in turn
    is reserved by creating its file (O_EXCL: the name is the lookup), the gateway skipped.
    The first one free wins, so no file is read and, usually, one is made."""
    gateways = {r.gateway for r in rs}
    tried = 0
    for ip in _candidates(rs, store.last_reserved(index)):
        if ip in gateways:
            continue
        if store.reserve(ip, owner):
            return ip
        tried += 1
        if tried >= PROBES:
            break
    return None


def _crowded(store: Store, index: int, rs: Sequence[Range], owner: Owner) -> IPAddress:
    """Past PROBES taken addresses in a row: the names in use (one directory listing, no file
    read) say where the next free one is, and whether there is any (a full range)."""
    taken = store.taken()
    while True:
        ip = pick(rs, store.last_reserved(index), taken)
        if ip is None:
            subnet = rs[0].subnet
            raise CniError(E.ENGINE_FAILURE, f"no IP addresses available in range set {subnet}")
        if store.reserve(ip, owner):
            return ip
        taken.add(ip)  # raced with a file the lock does not cover: try the next one


def free_count(store: Store, rs: Sequence[Range]) -> int:
    """Free addresses left in a range set (STATUS), counted up to a cap."""
    taken = store.taken() | {r.gateway for r in rs}
    total = 0
    for r in rs:
        size = int(r.end) - int(r.start) + 1
        total += size - sum(1 for t in taken if t in r)
        if total > 1 << 20:
            break
    return total
