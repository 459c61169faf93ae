"""Issue 15: a teardown's DNS update, through the engine's own calls (AardvarkConfig.remove, then
notify) against a running burrow-dns.

The contract (README, "A name resolves when setup returns"): once teardown returns, the name
is gone. burrow-dns now applies a teardown by cutting the container's records out of its
table in place (no line of the rewritten file parsed); these tests hold it to the same answers
as before: the name, its alias and its reverse record stop answering on the first query after
notify returns, a shared alias keeps exactly the other containers' addresses, the rest of the
network keeps answering; and two processes setting up and tearing down on one network at the
same time leave exactly the lines and the answers their calls add up to."""

from __future__ import annotations

import multiprocessing
import os
import signal
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from netns.aardvark import AardvarkConfig, Entry
from netns.dns.config import parse_network
from tests.integration.test_dns_hostile import stats
from tests.integration.test_dns_support import BURROW_DNS, addrs, pid_of, query, start_dns, wait_dead
from tests.nsutil import Netns

pytestmark = pytest.mark.root

LISTEN = "10.86.255.254"
NET = "dtnet"


def _entry(i: int) -> Entry:
    return Entry(NET, False, (LISTEN,), (), f"{i:064x}", (f"10.86.{i // 250}.{i % 250 + 2}",),
                 (), (f"t{i}", f"al{i}", "shared"), ())


def _ptr(ip: str) -> str:
    return ".".join(reversed(ip.split("."))) + ".in-addr.arpa"


@pytest.fixture
def served(netns_factory: Callable[[], Netns], tmp_path: Path) -> Iterator[tuple[Netns, AardvarkConfig, int]]:
    """burrow-dns in a test netns, a network of 200 containers, started as setup starts it."""
    ns = netns_factory()
    ns.run(["ip", "addr", "add", f"{LISTEN}/16", "dev", "lo"])
    ns.run(["ip", "link", "set", "lo", "up"])
    conf = AardvarkConfig(tmp_path, BURROW_DNS, 53)
    conf.add([_entry(i) for i in range(200)])
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("")
    start_dns(ns, conf.dir, {"BURROW_DNS_RESOLV_CONF": str(resolv)})
    pid = pid_of(conf.dir)
    try:
        yield ns, conf, pid
    finally:
        if not wait_dead(pid, 0.1):
            os.kill(pid, signal.SIGTERM)
            wait_dead(pid)


def _a(ns: Netns, name: str) -> list[str]:
    return addrs(query(ns, LISTEN, name, timeout=2))


def _shared(ns: Netns) -> list[str]:
    """The alias every container has: hundreds of addresses, too many for UDP."""
    return addrs(query(ns, LISTEN, "shared", tcp=True, timeout=2))


def test_a_name_is_gone_once_teardown_returns(served: tuple[Netns, AardvarkConfig, int]) -> None:
    ns, conf, pid = served
    left = list(range(200))
    parsed = stats(conf.dir, pid)["config"]["lines_parsed"]
    for i in (150, 0, 199, 77, 78, 12):  # the middle, the first line, the last line, neighbours
        ip = _entry(i).ipv4[0]
        assert _a(ns, f"t{i}") == [ip]
        assert addrs(query(ns, LISTEN, _ptr(ip), "PTR", timeout=2)) == sorted(
            [f"t{i}.", f"al{i}.", "shared."])
        conf.remove(_entry(i).container_id, [(NET, False)])
        conf.notify(start=False)
        left.remove(i)
        # The very first queries after teardown returned: nothing of it is left.
        assert _a(ns, f"t{i}") == [] and _a(ns, f"al{i}") == []
        assert addrs(query(ns, LISTEN, _ptr(ip), "PTR", timeout=2)) == []
        assert _shared(ns) == sorted(_entry(j).ipv4[0] for j in left)
        assert _a(ns, f"t{i + 1 if i < 199 else 1}") == [_entry(i + 1 if i < 199 else 1).ipv4[0]]
    assert stats(conf.dir, pid)["config"]["lines_parsed"] == parsed  # each cut, none parsed
    text = (conf.dir / NET).read_text()
    assert parse_network(NET, text).containers == tuple(
        parse_network(NET, _entry(j).header() + "\n" + _entry(j).line()).containers[0] for j in left)


def _worker(conf: AardvarkConfig, ns: Netns, ids: range, out: Any) -> None:
    """One process's setups and teardowns: each container added, then every other one removed;
    after each teardown returns, its name must be gone (whatever the other process did)."""
    try:
        for i in ids:
            conf.add([_entry(i)])
            conf.notify(start=False)
            if i % 2:
                conf.remove(_entry(i).container_id, [(NET, False)])
                conf.notify(start=False)
                assert _a(ns, f"t{i}") == [], i
        out.put(None)
    except BaseException:  # noqa: BLE001 - reported to the test
        out.put(traceback.format_exc())


def test_two_processes_set_up_and_tear_down_at_once(
        served: tuple[Netns, AardvarkConfig, int]) -> None:
    ns, conf, pid = served
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(conf, ns, ids, out))
             for ids in (range(1000, 1060), range(2000, 2060))]
    for p in procs:
        p.start()
    errors = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(10)
    assert errors == [None, None]
    kept = list(range(200)) + [i for r in (range(1000, 1060), range(2000, 2060)) for i in r
                               if i % 2 == 0]
    net = parse_network(NET, (conf.dir / NET).read_text())
    assert sorted(c.names[0] for c in net.containers) == sorted(f"t{i}" for i in kept)
    assert _shared(ns) == sorted(_entry(i).ipv4[0] for i in kept)
    for i in (1000, 1001, 1058, 1059, 2000, 2001, 2058, 2059, 5):
        assert _a(ns, f"t{i}") == ([_entry(i).ipv4[0]] if i in kept else []), i
