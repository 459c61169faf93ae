"""The config directory as the server last read it: a reload reads only the files that changed.

Each network file is remembered with its stat signature (device, inode, size, mtime, ctime),
what it parsed to, and its bytes. A reload stats every file (cheap) and opens only those whose
signature changed. Of a file that only grew (the engine appends one line per container, under
its lock) it reads and parses just the new bytes (plus the header and the last ANCHOR bytes
before them, to check them), so a setup's reload costs the same at 1 or 5,000 names. A file
that lost one run of whole lines and nothing else (a teardown: the engine, or netavark,
rewrites the file without the container's line) is read whole but parsed not at all: the old
bytes with that run cut out must be exactly the new bytes (compared by memcmp, not line by
line in Python), and the network is the old one without those lines' containers. Anything
else is read and parsed whole. Unchanged files keep their `Network` object, so the table
(netns/dns/table.py) can tell by identity which networks changed; `grown` and `shrunk` say
how the others changed, so it can apply just that.

Counters (`files_read`, `bytes_read`, `lines_parsed`) go to the stats file: they show that a
reload after one container's setup touched one file and its one new line, and after a
teardown one file and no line, whatever the number of networks and names.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from netns.dns import config

log = logging.getLogger("netns.dns")


ANCHOR = 64  # bytes of a file's end that must match for a longer file to count as grown


@dataclass(frozen=True)
class Cached:
    sig: tuple[int, ...]
    raw: bytes  # what was parsed: the file as it was read (the new bytes of a grown one added)
    lines: int  # newlines in it (a later line's number, for error messages)
    head: int  # length of the header line, "\n" included
    dense: bool  # ends with "\n" and every line after the header is a container, in order
    network: config.Network | None  # None: the file is bad (its error was logged when read)

    @property
    def size(self) -> int:
        return len(self.raw)


def _sig(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _cached(sig: tuple[int, ...], raw: bytes, network: config.Network | None) -> Cached:
    lines = raw.count(b"\n")
    # Container i is line i + 2 exactly when each line but the first made one container.
    dense = (network is not None and raw.endswith(b"\n") and not raw.startswith(b"\n")
             and len(network.containers) == lines - 1)
    return Cached(sig, raw, lines, raw.find(b"\n") + 1, dense, network)


BAD = Cached((), b"", 0, 0, False, None)  # an empty signature: read again next time


Delta = tuple[config.Network, tuple[config.Container, ...]]  # what it was, what was appended
Cut = tuple[config.Network, int, int]  # what it was; its containers [start:stop] are gone


class ConfigFiles:
    def __init__(self, path: str) -> None:
        self.path = path
        self.files: dict[str, Cached] = {}
        self.reads = 0  # directory scans
        self.files_read = 0
        self.bytes_read = 0
        self.lines_parsed = 0
        # Of the last read, by network name: those that only had containers appended, and
        # those that only lost a run of them, for table.update to apply just that instead of
        # comparing (or rebuilding from) their container lists.
        self.grown: dict[str, Delta] = {}
        self.shrunk: dict[str, Cut] = {}

    def read(self) -> dict[str, config.Network]:
        """Every good network file, by network name (sorted). Raises OSError if the directory
        is unreadable; a bad file is logged when read and skipped while it stays bad."""
        self.reads += 1
        self.grown = {}
        self.shrunk = {}
        with os.scandir(self.path) as it:
            entries = sorted((e for e in it if config.is_network_file(e.name)), key=lambda e: e.name)
        files: dict[str, Cached] = {}
        for entry in entries:
            try:
                if not entry.is_file():
                    continue
                sig = _sig(entry.stat())
            except OSError:
                continue  # gone between the scan and the stat
            old = self.files.get(entry.name)
            same = old is not None and old.sig == sig
            files[entry.name] = old if same and old is not None else self._load(entry, old)
        self.files = files
        return {c.network.name: c.network for c in files.values() if c.network is not None}

    def _load(self, entry: os.DirEntry[str], old: Cached | None) -> Cached:
        self.files_read += 1
        try:
            with open(entry.path, "rb") as f:
                st = os.fstat(f.fileno())
                sig = _sig(st)  # of what is read: a later write shows next time
                grown = self._appended(f.fileno(), st, old)
                if grown is not None:
                    return grown
                raw = f.read()
            self.bytes_read += len(raw)
            if old is not None and old.network is not None:
                if raw == old.raw:  # touched, or rewritten as it was: the same records
                    return Cached(sig, old.raw, old.lines, old.head, old.dense, old.network)
                cut = self._cut(sig, raw, old)
                if cut is not None:
                    return cut
            text = raw.decode("utf-8")
            self.lines_parsed += text.count("\n") + (not text.endswith("\n"))
            return _cached(sig, raw, config.parse_network(entry.name, text))
        except (OSError, UnicodeDecodeError, config.ConfigError) as exc:
            log.warning("skipping network config %s: %s", entry.path, exc)
            return BAD

    def _appended(self, fd: int, st: os.stat_result, old: Cached | None) -> Cached | None:
        """The file with only the bytes written after what `old` parsed, if it only grew: the
        same inode, longer, the old part ending a line, and its header and last ANCHOR bytes
        where they were. (The engine appends one line per container under its lock and
        replaces the file by rename for anything else; netavark rewrites in place to remove
        a line or change the header, which changes one or the other.) None: read it whole."""
        if (old is None or old.network is None or old.sig[:2] != (st.st_dev, st.st_ino)
                or st.st_size <= old.size or not old.raw.endswith(b"\n")):
            return None
        anchor = old.raw[-ANCHOR:]
        skip = old.size - len(anchor)
        chunk = os.pread(fd, st.st_size - skip, skip)
        head = os.pread(fd, old.head, 0) if skip else chunk[: old.head]
        self.bytes_read += len(chunk) + (len(head) if skip else 0)
        if (len(chunk) != st.st_size - skip or head != old.raw[: old.head]
                or chunk[: len(anchor)] != anchor):
            return None  # cut short meanwhile, or changed before the end: read it whole
        tail = chunk[len(anchor):]
        text = tail.decode("utf-8")
        self.lines_parsed += text.count("\n") + (not text.endswith("\n"))
        net = config.extend_network(old.network, text, old.lines + 1)
        added = net.containers[len(old.network.containers):]
        self.grown[net.name] = (old.network, added)
        dense = old.dense and tail.endswith(b"\n") and len(added) == tail.count(b"\n")
        return Cached(_sig(st), old.raw + tail, old.lines + tail.count(b"\n"), old.head, dense,
                      net)

    def _cut(self, sig: tuple[int, ...], raw: bytes, old: Cached) -> Cached | None:
        """The file as `old` with one run of whole container lines taken out, if that is all
        that changed: no line parsed, the containers of those lines dropped. None otherwise."""
        if not old.dense or old.network is None:
            return None
        span = removed_run(old.raw, raw, old.head)
        if span is None:
            return None
        p, q = span
        gone = old.raw.count(b"\n", p, q)
        # Container i is line i + 2: count the lines on the shorter side of the run.
        if p - old.head <= old.size - q:
            start = old.raw.count(b"\n", old.head, p)
        else:
            start = old.lines - 1 - gone - old.raw.count(b"\n", q)
        stop = start + gone
        net = old.network
        kept = net.containers[:start] + net.containers[stop:]
        new = config.Network(net.name, net.internal, net.listen_ips, net.dns_servers, kept)
        self.shrunk[net.name] = (net, start, stop)
        return Cached(sig, raw, old.lines - (stop - start), old.head, True, new)


def removed_run(old: bytes, new: bytes, head: int) -> tuple[int, int] | None:
    """(p, q) such that `new` is `old` without old[p:q], a run of whole lines after the first
    `head` bytes (the header line), or None. O(log n) steps, each a memcmp in C (about 2n
    bytes compared in all): a teardown's reload must not cost a Python loop over every line of
    a 500-container file."""
    d = len(old) - len(new)
    if d <= 0 or not old.startswith(memoryview(new)[:head]):
        return None
    lo, hi = head, len(new)  # old and new agree on their first `lo` bytes; not past `hi`
    view = memoryview(new)
    while lo < hi:  # each step compares only what is not known yet: ~2n bytes in all
        mid = (lo + hi + 1) // 2
        if old.startswith(view[lo:mid], lo):
            lo = mid
        else:
            hi = mid - 1
    p = old.rfind(b"\n", 0, lo) + 1  # back to the start of the line the difference is in
    if p < head or old[p + d - 1: p + d] != b"\n" or not old.endswith(view[p:]):
        return None
    return p, p + d
