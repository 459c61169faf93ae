"""The config directory as the server last read it: a reload reads only the files that changed.

Each network file is remembered with its stat signature (device, inode, size, mtime, ctime),
its bytes and what they parsed to. A reload stats every file (cheap) and reads only those whose
signature changed; a file that only grew (the engine appends one line per container, under its
lock) has just its new lines parsed. Any other change (the engine's rewrite-and-rename on
teardown makes a new inode) is parsed whole. Unchanged files keep their `Network` object, so
the table (netns/dns/table.py) can tell by identity which networks changed.

Counters (`files_read`, `lines_parsed`) go to the stats file: they show that a reload after one
container's setup touched one file, whatever the number of networks and names.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from netns.dns import config

log = logging.getLogger("netns.dns")


@dataclass(frozen=True)
class Cached:
    sig: tuple[int, ...]
    raw: bytes
    network: config.Network | None  # None: the file is bad (its error was logged when read)


def _sig(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class ConfigFiles:
    def __init__(self, path: str) -> None:
        self.path = path
        self.files: dict[str, Cached] = {}
        self.reads = 0  # directory scans
        self.files_read = 0
        self.lines_parsed = 0

    def read(self) -> dict[str, config.Network]:
        """Every good network file, by network name (sorted). Raises OSError if the directory
        is unreadable; a bad file is logged when read and skipped while it stays bad."""
        self.reads += 1
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
                sig = _sig(os.fstat(f.fileno()))  # of what is read: a later write shows next time
                raw = f.read()
            return Cached(sig, raw, self._parse(entry.name, raw, old))
        except (OSError, UnicodeDecodeError, config.ConfigError) as exc:
            log.warning("skipping network config %s: %s", entry.path, exc)
            return Cached((), b"", None)  # an empty signature: read again at the next reload

    def _parse(self, name: str, raw: bytes, old: Cached | None) -> config.Network:
        # By content, not by inode: if the old bytes are a prefix ending a line, parsing only
        # the rest gives exactly what parsing the whole would.
        if (old is not None and old.network is not None and old.raw.endswith(b"\n")
                and len(raw) > len(old.raw) and raw.startswith(old.raw)):
            tail = raw[len(old.raw):].decode("utf-8")
            self.lines_parsed += tail.count("\n") + (not tail.endswith("\n"))
            return config.extend_network(old.network, tail, old.raw.count(b"\n") + 1)
        text = raw.decode("utf-8")
        self.lines_parsed += text.count("\n") + (not text.endswith("\n"))
        return config.parse_network(name, text)
