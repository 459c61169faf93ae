"""Two burrow-dns servers of one config dir, overlapping: the old one (its network removed) is
still on its way out when the setup of another network, with another gateway address, starts
the next one (the engine waits for it only so long), or a restart starts one before the old
one is gone. The old one's exit must leave the new one's reload socket, pid file and stats
file alone (netns/dns/owned.py): otherwise the engine's reload handshake finds no socket,
falls back to SIGHUP, which returns at once, and a name asked for right after setup can be
NXDOMAIN. The old server is held with SIGSTOP until the new one serves, then let exit, which
is what a busy machine does to it by chance."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from netns import statefiles
from netns.aardvark import AardvarkConfig, Entry
from netns.dns import control
from tests.integration.test_dns_support import BURROW_DNS, addrs, alive, pid_of, query, start_dns, wait_dead
from tests.nsutil import Netns

pytestmark = pytest.mark.root

OLD_GW, NEW_GW = "10.86.1.1", "10.86.2.1"


def _entry(net: str, gw: str, i: int) -> Entry:
    prefix = gw.rsplit(".", 1)[0]
    return Entry(net, False, (gw,), (), f"{net}{i:060x}"[:64], (f"{prefix}.{10 + i}",), (),
                 (f"{net}{i}",), ())


@pytest.fixture
def world(netns_factory: Callable[[], Netns],
          tmp_path: Path) -> tuple[Netns, AardvarkConfig, dict[str, str]]:
    ns = netns_factory()
    for gw in (OLD_GW, NEW_GW):
        ns.run(["ip", "addr", "add", f"{gw}/24", "dev", "lo"])
    ns.run(["ip", "link", "set", "lo", "up"])
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("")  # no host upstream: nothing leaves the namespace
    return ns, AardvarkConfig(tmp_path, BURROW_DNS, 53), {"BURROW_DNS_RESOLV_CONF": str(resolv)}


def _stop(pid: int) -> None:
    if alive(pid):
        os.kill(pid, signal.SIGCONT)
        os.kill(pid, signal.SIGTERM)
        wait_dead(pid)


@pytest.mark.parametrize("exit_by", ["sigterm", "superseded"])
def test_an_exiting_server_leaves_the_newer_servers_files(
        world: tuple[Netns, AardvarkConfig, dict[str, str]], exit_by: str) -> None:
    ns, conf, env = world
    conf.add([_entry("tqold", OLD_GW, 0)])
    start_dns(ns, conf.dir, env)
    old = pid_of(conf.dir)
    new = None
    try:
        os.kill(old, signal.SIGSTOP)  # busy: it has not got to its exit yet
        conf.remove(_entry("tqold", OLD_GW, 0).container_id, [("tqold", False)])
        conf.add([_entry("tqnew", NEW_GW, 0)])
        start_dns(ns, conf.dir, env)  # another gateway: binds beside the old one
        new = pid_of(conf.dir)
        assert new != old
        sock = conf.dir / statefiles.DNS_CONTROL
        sock_id = sock.stat().st_ino
        os.kill(old, signal.SIGCONT)
        if exit_by == "sigterm":
            os.kill(old, signal.SIGTERM)  # now it gets to its exit
        # else on its own: its pid file names the newer server, so nobody can reach it
        # any more (it would serve stale records for ever)
        assert wait_dead(old, 15)

        # The newer server's files are still there, and still its own.
        assert sock.is_socket() and sock.stat().st_ino == sock_id
        assert pid_of(conf.dir) == new
        stats = json.loads((conf.dir / statefiles.DNS_STATS).read_text())
        assert stats["pid"] == new
        # The handshake reaches it, so a setup returns only once its name is served.
        assert control.request(str(conf.dir), 2.0) is True
        for i in range(1, 4):
            e = _entry("tqnew", NEW_GW, i)
            conf.add([e])
            conf.notify(start=False)
            assert addrs(query(ns, NEW_GW, e.names[0], timeout=2)) == [e.ipv4[0]]
    finally:
        _stop(old)
        if new is not None:
            _stop(new)
    # The newer server's own exit removes its files as before.
    assert not (conf.dir / statefiles.DNS_CONTROL).exists()
    assert not (conf.dir / statefiles.AARDVARK_PID).exists()
    assert not (conf.dir / statefiles.DNS_STATS).exists()


def test_a_start_with_nothing_to_serve_keeps_a_live_servers_pid_file(
        world: tuple[Netns, AardvarkConfig, dict[str, str]]) -> None:
    """A start that finds none of its listen addresses here (a bridge removed without a
    teardown) exits 0 without a process, like aardvark, and removes a stale pid file, but not
    the pid file of the server still running from this directory."""
    ns, conf, env = world
    conf.add([_entry("tqnew", NEW_GW, 0)])
    start_dns(ns, conf.dir, env)
    pid = pid_of(conf.dir)
    try:
        ns.run(["ip", "addr", "del", f"{NEW_GW}/24", "dev", "lo"])
        res = start_dns(ns, conf.dir, env, check=False)
        assert res.returncode == 0, res.stderr
        assert pid_of(conf.dir) == pid and alive(pid)
    finally:
        _stop(pid)
    (conf.dir / statefiles.AARDVARK_PID).write_text("999999999")  # a dead server's
    assert start_dns(ns, conf.dir, env, check=False).returncode == 0
    assert not (conf.dir / statefiles.AARDVARK_PID).exists()
