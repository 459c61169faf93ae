"""The config directory as the server last read it: a reload reads only the files that changed.

Each network file is remembered with its stat signature (device, inode, size, mtime, ctime),
what it parsed to, and just enough of its bytes to recognise a file that only grew: its header
line and its last ANCHOR bytes. A reload stats every file (cheap) and opens only those whose
signature changed; of a file that only grew (the engine appends one line per container, under
its lock) it reads and parses just the new bytes (plus the header and anchor, to check them),
so a setup's reload costs the same at 1 or 5,000 names. Any other change (the engine's
rewrite-and-rename on teardown makes a new inode) is read and parsed whole. Unchanged files
keep their `Network` object, so the table (netns/dns/table.py) can tell by identity which
networks changed.

Counters (`files_read`, `bytes_read`, `lines_parsed`) go to the stats file: they show that a
reload after one container's setup touched one file and its one new line, whatever the number
of networks and names.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from netns.dns import config

log = logging.getLogger("netns.dns")


ANCHOR = 64  # bytes of a file's end kept to check that a longer file only grew


@dataclass(frozen=True)
class Cached:
    sig: tuple[int, ...]
    size: int  # bytes parsed so far
    lines: int  # newlines in them (a later line's number, for error messages)
    head: bytes  # the header line, "\n" included
    anchor: bytes  # the last ANCHOR bytes parsed
    network: config.Network | None  # None: the file is bad (its error was logged when read)


def _sig(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _cached(sig: tuple[int, ...], raw: bytes, network: config.Network | None) -> Cached:
    head = raw[: raw.find(b"\n") + 1]
    return Cached(sig, len(raw), raw.count(b"\n"), head, raw[-ANCHOR:], network)


class ConfigFiles:
    def __init__(self, path: str) -> None:
        self.path = path
        self.files: dict[str, Cached] = {}
        self.reads = 0  # directory scans
        self.files_read = 0
        self.bytes_read = 0
        self.lines_parsed = 0
        # Of the last read: network name -> (the Network it was, the containers appended),
        # for table.update to extend that network instead of comparing its container lists.
        self.grown: dict[str, tuple[config.Network, tuple[config.Container, ...]]] = {}

    def read(self) -> dict[str, config.Network]:
        """Every good network file, by network name (sorted). Raises OSError if the directory
        is unreadable; a bad file is logged when read and skipped while it stays bad."""
        self.reads += 1
        self.grown = {}
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
            text = raw.decode("utf-8")
            self.lines_parsed += text.count("\n") + (not text.endswith("\n"))
            return _cached(sig, raw, config.parse_network(entry.name, text))
        except (OSError, UnicodeDecodeError, config.ConfigError) as exc:
            log.warning("skipping network config %s: %s", entry.path, exc)
            return Cached((), 0, 0, b"", b"", None)  # an empty signature: read again next time

    def _appended(self, fd: int, st: os.stat_result, old: Cached | None) -> Cached | None:
        """The file with only the bytes written after what `old` parsed, if it only grew: the
        same inode, longer, the old part ending a line, and its header and last ANCHOR bytes
        where they were. (The engine appends one line per container under its lock and
        replaces the file by rename for anything else; netavark rewrites in place to remove
        a line or change the header, which changes one or the other.) None: read it whole."""
        if (old is None or old.network is None or old.sig[:2] != (st.st_dev, st.st_ino)
                or st.st_size <= old.size or not old.anchor.endswith(b"\n")):
            return None
        skip = old.size - len(old.anchor)
        chunk = os.pread(fd, st.st_size - skip, skip)
        head = os.pread(fd, len(old.head), 0) if skip else chunk[: len(old.head)]
        self.bytes_read += len(chunk) + (len(head) if skip else 0)
        if (len(chunk) != st.st_size - skip or head != old.head
                or chunk[: len(old.anchor)] != old.anchor):
            return None  # cut short meanwhile, or changed before the end: read it whole
        tail = chunk[len(old.anchor):]
        text = tail.decode("utf-8")
        self.lines_parsed += text.count("\n") + (not text.endswith("\n"))
        net = config.extend_network(old.network, text, old.lines + 1)
        self.grown[net.name] = (old.network, net.containers[len(old.network.containers):])
        return Cached(_sig(st), st.st_size, old.lines + tail.count(b"\n"), old.head,
                      (old.anchor + tail)[-ANCHOR:], net)
