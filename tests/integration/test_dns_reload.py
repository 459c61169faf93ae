"""Issue 15: a reload applies only the changed network. burrow-dns serves 20 networks; one
container added (a line appended, as the engine does) or removed (a rewrite-and-rename) makes
the next SIGHUP read that one file, and parse only the new line when the file grew, and no
line when it lost one. The stats
file's counters show it; the names of every network keep resolving throughout."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.engine_util import wait_for
from tests.integration.test_dns_hostile import stats
from tests.integration.test_dns_support import addrs, pid_of, query, start_dns
from tests.nsutil import Netns

pytestmark = pytest.mark.root

NETS, PER = 20, 25


def _line(n: int, i: int) -> str:
    return f"{n:032x}{i:032x} 10.88.{n}.{10 + i}  n{n}c{i}"


def _write(cfg: Path, n: int, ids: range) -> None:
    tmp = cfg / f".net{n}.tmp"
    tmp.write_text("\n".join([f"10.88.{n}.1"] + [_line(n, i) for i in ids]) + "\n")
    tmp.replace(cfg / f"net{n}")


def test_reload_reads_only_the_changed_file(netns_factory: Callable[[], Netns],
                                            tmp_path: Path) -> None:
    ns = netns_factory()
    for n in range(NETS):
        ns.run(["ip", "addr", "add", f"10.88.{n}.1/24", "dev", "lo"])
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    for n in range(NETS):
        _write(cfg, n, range(PER))
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("")
    start_dns(ns, cfg, {"BURROW_DNS_RESOLV_CONF": str(resolv)})
    pid = pid_of(cfg)

    def a(n: int, name: str) -> list[str]:
        return addrs(query(ns, f"10.88.{n}.1", name, timeout=1))

    def counters() -> dict[str, Any]:
        c: dict[str, Any] = stats(cfg, pid)["config"]
        return c

    try:
        start = counters()
        assert (start["files_read"], start["lines_parsed"]) == (NETS, NETS * (PER + 1))
        with open(cfg / "net7", "a") as f:  # the engine adds one container
            f.write(_line(7, 99) + "\n")
        os.kill(pid, signal.SIGHUP)
        assert wait_for(lambda: a(7, "n7c99") == ["10.88.7.109"], 10)
        grown = counters()
        assert grown["files_read"] == start["files_read"] + 1
        assert grown["lines_parsed"] == start["lines_parsed"] + 1  # the new line, not the file
        _write(cfg, 12, range(1, PER))  # the engine removes one: rewrite and rename
        os.kill(pid, signal.SIGHUP)
        assert wait_for(lambda: a(12, "n12c0") == [], 10)
        shrunk = counters()
        assert shrunk["files_read"] == grown["files_read"] + 1
        # That file read, no line of it parsed: the old one with that line's container cut.
        assert shrunk["lines_parsed"] == grown["lines_parsed"]
        os.kill(pid, signal.SIGHUP)  # nothing changed: the directory is scanned, nothing read
        assert wait_for(lambda: counters()["reads"] > shrunk["reads"], 10)
        assert counters()["files_read"] == shrunk["files_read"]
        for n in (0, 7, 12, NETS - 1):  # every network still answers
            assert a(n, f"n{n}c3") == [f"10.88.{n}.13"]
    finally:
        os.kill(pid, signal.SIGTERM)
