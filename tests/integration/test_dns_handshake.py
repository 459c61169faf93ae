"""Issue 15: a new name resolves as soon as setup returns. The engine's notify (netns/aardvark.py)
asks burrow-dns over its reload socket (netns/dns/control.py) and returns only once the server
answers that the change is served: while the server cannot answer (stopped), notify does not
return; once it does, the very first query for the new name is answered. A server without the
socket (aardvark-dns, a stale socket) still gets SIGHUP, and the last network's removal lets
the server exit cleanly."""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from netns import statefiles
from netns.aardvark import AardvarkConfig, Entry
from netns.dns import control
from tests.engine_util import wait_for
from tests.integration.test_dns_support import BURROW_DNS, addrs, pid_of, query, start_dns, wait_dead
from tests.nsutil import Netns

pytestmark = pytest.mark.root

LISTEN = "10.87.0.1"


def _entry(i: int) -> Entry:
    return Entry("hsnet", False, (LISTEN,), (), f"{i:064x}", (f"10.87.{i // 250}.{i % 250 + 2}",),
                 (), (f"h{i}",), ())


@pytest.fixture
def served(netns_factory: Callable[[], Netns], tmp_path: Path) -> tuple[Netns, AardvarkConfig, int]:
    """burrow-dns in a test netns on a network of 300 containers, started as setup starts it."""
    ns = netns_factory()
    ns.run(["ip", "addr", "add", f"{LISTEN}/16", "dev", "lo"])
    ns.run(["ip", "link", "set", "lo", "up"])
    conf = AardvarkConfig(tmp_path, BURROW_DNS, 53)
    conf.add([_entry(i) for i in range(300)])
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("")
    start_dns(ns, conf.dir, {"BURROW_DNS_RESOLV_CONF": str(resolv)})
    return ns, conf, pid_of(conf.dir)


def _first_answer(ns: Netns, i: int) -> list[str]:
    return addrs(query(ns, LISTEN, f"h{i}", timeout=2))


def test_notify_returns_once_the_new_name_is_served(
        served: tuple[Netns, AardvarkConfig, int]) -> None:
    ns, conf, pid = served
    assert (conf.dir / statefiles.DNS_CONTROL).is_socket()
    try:
        for i in range(300, 310):  # one setup after another; each name on the first query
            conf.add([_entry(i)])
            conf.notify(start=False)
            assert _first_answer(ns, i) == [_entry(i).ipv4[0]]
        # While the server cannot answer, notify does not return (a SIGHUP returns at once).
        conf.add([_entry(310)])
        os.kill(pid, signal.SIGSTOP)
        done = threading.Event()
        waiter = threading.Thread(target=lambda: (conf.notify(start=False), done.set()))
        try:
            waiter.start()
            assert not done.wait(0.5)
        finally:
            os.kill(pid, signal.SIGCONT)
        waiter.join(10)
        assert done.is_set()
        assert _first_answer(ns, 310) == [_entry(310).ipv4[0]]
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_dead(pid)
    assert not (conf.dir / statefiles.DNS_CONTROL).exists()  # a clean exit removes it


def test_without_a_reload_socket_the_server_gets_sighup(
        served: tuple[Netns, AardvarkConfig, int]) -> None:
    """aardvark-dns, an older burrow-dns, or a socket left by a killed one: connect fails and
    notify falls back to SIGHUP, which still applies the change."""
    ns, conf, pid = served
    path = conf.dir / statefiles.DNS_CONTROL
    try:
        path.unlink()
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        stale.bind(str(path))  # a socket file nobody listens on
        stale.close()
        assert control.request(str(conf.dir), 1.0) is None
        conf.add([_entry(400)])
        conf.notify(start=False)
        assert wait_for(lambda: _first_answer(ns, 400) == [_entry(400).ipv4[0]], 10)
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_dead(pid)


def test_removing_the_last_network_lets_the_server_exit(
        served: tuple[Netns, AardvarkConfig, int]) -> None:
    ns, conf, pid = served
    try:
        conf.remove("unused", [("hsnet", False)])  # a container it does not have: no change
        conf.notify(start=False)
        assert _first_answer(ns, 5) == [_entry(5).ipv4[0]]
        for i in range(300):  # the network's last container goes: its file goes
            conf.remove(_entry(i).container_id, [("hsnet", False)])
        assert not (conf.dir / "hsnet").exists()
        assert control.request(str(conf.dir), 2.0) is False  # "exiting", not "applied"
        assert wait_dead(pid)
        assert not (conf.dir / statefiles.DNS_CONTROL).exists()
        assert not (conf.dir / statefiles.AARDVARK_PID).exists()
    finally:
        if not wait_dead(pid, 0.1):
            os.kill(pid, signal.SIGTERM)
