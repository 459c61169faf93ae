"""burrow-dns against hostile and unlucky peers, on a real server in a throwaway namespace:
a query that used to kill it, a UDP flood, a TCP slowloris, a full connection table, running
out of fds, and a stale config file whose bridge is gone (issue 12 items 1 and 9, issue 10).

After each attack an ordinary query must still be answered (within a generous timeout: no
timing assertions), and the stats file must count what was shed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import pytest

from tests.integration.test_dns_lifecycle import CTR, GW, one_network
from tests.integration.test_dns_support import (
    FakeUpstream,
    addrs,
    alive,
    ns_socket,
    pid_of,
    query,
    start_dns,
    wait_dead,
)
from tests.nsutil import Netns

pytestmark = pytest.mark.root

STATS = ".burrow-dns-stats.json"  # netns.statefiles.DNS_STATS, spelled here to test the contract
REFUSER = "127.0.0.9"  # nothing listens there: an upstream that fails at once
SILENT, GOOD = "10.89.8.9", "10.89.8.8"
GW_B, CTR_B = "10.89.8.1", "10.89.8.10"  # a second network, whose upstream answers
ATTACKER = "10.89.7.11"  # also a container of the first network


@pytest.fixture
def ns(netns_factory: Callable[[], Netns]) -> Netns:
    n = netns_factory()
    for ip in [f"{GW}/24", f"{GW_B}/24", SILENT, GOOD, CTR_B]:
        n.run(["ip", "addr", "add", ip if "/" in ip else f"{ip}/32", "dev", "lo"])
    for i in range(10):
        n.run(["ip", "addr", "add", f"10.89.7.{10 + i}/32", "dev", "lo"])
    return n


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {REFUSER}\n")  # refused at once: the SERVFAIL path
    return {"BURROW_DNS_RESOLV_CONF": str(resolv), "BURROW_DNS_UPSTREAM_TIMEOUT": "1.0"}


def started(ns: Netns, cfg: Path, env: dict[str, str]) -> int:
    res = start_dns(ns, cfg, env, check=False)
    assert res.returncode == 0, res.stderr
    return pid_of(cfg)


def stats(cfg: Path, pid: int) -> dict[str, Any]:
    """Ask for a fresh stats file (SIGUSR1) and read it once it has been rewritten."""
    path = cfg / STATS
    before = path.stat().st_mtime_ns if path.exists() else 0
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_mtime_ns != before:
            data: dict[str, Any] = json.loads(path.read_text())
            return data
        time.sleep(0.05)
    raise AssertionError(f"{path} was not rewritten after SIGUSR1")


def long_name_query(qid: int = 0x4242) -> bytes:
    """A question dnslib parses but cannot pack: four 63-byte labels, 257 bytes on the wire."""
    name = b"".join(b"\x3f" + b"a" * 63 for _ in range(4)) + b"\x00"
    return struct.pack("!6H", qid, 0x0100, 1, 0, 0, 0) + name + struct.pack("!HH", 1, 1)


def healthy(ns: Netns, tcp: bool = False) -> None:
    assert addrs(query(ns, GW, "r3", source=CTR, tcp=tcp, timeout=5)) == ["10.89.7.13"]


# -- issue 12 item 1: one query killed DNS for every network -----------------------------------
def test_unpackable_name_on_the_failed_forward_path_gets_servfail(
    ns: Netns, tmp_path: Path, env: dict[str, str]
) -> None:
    cfg = tmp_path / "cfg"
    one_network(cfg)
    pid = started(ns, cfg, env)
    wire = long_name_query()
    s = ns_socket(ns, socket.AF_INET, socket.SOCK_DGRAM, (CTR, 0))
    with s:
        s.settimeout(5)
        s.sendto(wire, (GW, 53))
        reply = s.recv(4096)  # forwarded, refused upstream, then SERVFAIL built for it
    assert struct.unpack("!HH", reply[:4]) == (0x4242, 0x8180 | dns.rcode.SERVFAIL)
    assert reply[12:] == wire[12:]
    t = ns_socket(ns, socket.AF_INET, socket.SOCK_STREAM, (CTR, 0))
    with t:
        t.settimeout(5)
        t.connect((GW, 53))
        t.sendall(struct.pack("!H", len(wire)) + wire)
        head = t.recv(2)
        reply = t.recv(struct.unpack("!H", head)[0])
    assert reply[3] & 0x0F == dns.rcode.SERVFAIL
    assert alive(pid)
    healthy(ns)
    healthy(ns, tcp=True)
    assert stats(cfg, pid)["faults"] == 0  # fixed at the root, not merely caught


# -- issue 12 item 9: TCP slowloris ----------------------------------------------------------
def _connect_many(ns: Netns, source: str, count: int) -> list[socket.socket]:
    out = []
    for _ in range(count):
        s = ns_socket(ns, socket.AF_INET, socket.SOCK_STREAM, (source, 0))
        s.settimeout(5)
        s.connect((GW, 53))
        out.append(s)
    return out


def _trickle(socks: list[socket.socket], stop: threading.Event) -> None:
    """One byte per connection every second of a well-formed 512-byte frame, for as long as
    the connection lasts: never a complete message, never a malformed one."""
    frame = struct.pack("!H", 512) + bytes(512)
    i = 0
    while not stop.is_set():
        for s in socks:
            try:
                s.send(frame[i : i + 1])
            except OSError:
                pass
        i += 1
        stop.wait(1.0)


def _closed_by_peer(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True  # reset
    finally:
        s.setblocking(True)


def test_tcp_slowloris_holds_no_slot(ns: Netns, tmp_path: Path, env: dict[str, str]) -> None:
    cfg = tmp_path / "cfg"
    one_network(cfg)
    pid = started(ns, cfg, env)
    socks = _connect_many(ns, ATTACKER, 530)  # more than the server's whole table used to hold
    stop = threading.Event()
    trickler = threading.Thread(target=_trickle, args=(socks, stop))
    trickler.start()
    try:
        time.sleep(1.5)  # a byte has been trickled on every connection twice now
        healthy(ns, tcp=True)  # another client still gets in and gets its answer
        deadline = time.monotonic() + 30  # generous: the server's bound is a few seconds
        while time.monotonic() < deadline and not all(_closed_by_peer(s) for s in socks):
            time.sleep(0.5)
        assert all(_closed_by_peer(s) for s in socks), "a trickling client kept its connection"
    finally:
        stop.set()
        trickler.join()
        for s in socks:
            s.close()
    counts = stats(cfg, pid)["shed"]
    assert counts["tcp_per_client"] >= 530 - 16  # one address holds 16 connections at most
    assert counts["tcp_timeout"] >= 1  # and those, trickling, were timed out
    healthy(ns, tcp=True)


def test_full_table_makes_room_by_evicting_the_oldest_idle(
    ns: Netns, tmp_path: Path, env: dict[str, str]
) -> None:
    cfg = tmp_path / "cfg"
    one_network(cfg)
    pid = started(ns, cfg, {**env, "BURROW_DNS_TCP_TOTAL": "4", "BURROW_DNS_TCP_PER_CLIENT": "2",
                            "BURROW_DNS_TCP_TIMEOUT": "60"})
    held = _connect_many(ns, "10.89.7.12", 2) + _connect_many(ns, "10.89.7.13", 2)
    try:
        time.sleep(0.5)  # accepted, in order
        healthy(ns, tcp=True)  # a fifth client: the oldest idle connection made room
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not _closed_by_peer(held[0]):
            time.sleep(0.1)
        assert _closed_by_peer(held[0])
        assert not any(_closed_by_peer(s) for s in held[2:])
    finally:
        for s in held:
            s.close()
    assert stats(cfg, pid)["shed"]["tcp_evicted"] >= 1


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_out_of_fds_pauses_accept_instead_of_spinning(
    ns: Netns, tmp_path: Path, env: dict[str, str]
) -> None:
    cfg = tmp_path / "cfg"
    one_network(cfg)
    pid = started(ns, cfg, env)
    used = len(os.listdir(f"/proc/{pid}/fd"))
    soft = subprocess.run(["prlimit", f"--pid={pid}", "--nofile", "-o", "SOFT", "--noheadings"],
                          check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run(["prlimit", f"--pid={pid}", f"--nofile={used + 3}:"], check=True)
    socks = [s for i in range(6) for s in _connect_many(ns, f"10.89.7.{12 + i}", 2)]
    try:
        time.sleep(0.5)  # the server has met EMFILE with connections still queued
        before = _cpu_seconds(pid)
        time.sleep(2.0)
        assert _cpu_seconds(pid) - before < 1.0  # a busy accept loop would burn ~2 s here
        assert alive(pid)
        healthy(ns)  # UDP is served all along
    finally:
        for s in socks:
            s.close()
    subprocess.run(["prlimit", f"--pid={pid}", f"--nofile={soft}:"], check=True)
    healthy(ns, tcp=True)  # and TCP again once fds are free
    assert stats(cfg, pid)["accept_errors"] >= 1


# -- UDP flood: pending upstream queries are capped per client --------------------------------
def test_udp_flood_of_forwards_is_capped_per_client(
    ns: Netns, tmp_path: Path, env: dict[str, str]
) -> None:
    cfg = tmp_path / "cfg"
    one_network(cfg)
    (cfg / "dnb").write_text(f"{GW_B} {GOOD}\n{'b' * 64} {CTR_B}  b1\n")
    (cfg / "dnr").write_text((cfg / "dnr").read_text().replace(GW, f"{GW} {SILENT}", 1))
    silent = ns_socket(ns, socket.AF_INET, socket.SOCK_DGRAM, (SILENT, 53))  # never answers
    silent.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE: count, never drop
    good = FakeUpstream(ns, GOOD, "192.0.2.7")
    cap, flood = 100, 3000
    pid = started(ns, cfg, {**env, "BURROW_DNS_UPSTREAM_TIMEOUT": "30",
                            "BURROW_DNS_PENDING_PER_CLIENT": str(cap)})
    try:
        s = ns_socket(ns, socket.AF_INET, socket.SOCK_DGRAM, (ATTACKER, 0))
        with s:
            for i in range(flood):
                s.sendto(dns.message.make_query(f"f{i % 7}.flood.test", "A").to_wire(), (GW, 53))
        # The attacker's own local query comes after its whole flood on the same socket pair:
        # once it is answered, every flood packet has been handled.
        assert addrs(query(ns, GW, "r1", source=ATTACKER, timeout=10)) == ["10.89.7.11"]
        # another client, forwarding through another network, is answered
        assert addrs(query(ns, GW_B, "out.example.test", source=CTR_B, timeout=5)) == ["192.0.2.7"]
        silent.setblocking(False)
        received = 0
        while True:
            try:
                silent.recv(4096)
            except BlockingIOError:
                break
            received += 1
        assert received == cap  # the rest was shed, not queued upstream
        counts = stats(cfg, pid)
        assert counts["shed"]["pending_per_client"] == flood - cap
        assert counts["upstream_pending"] == cap
    finally:
        good.close()
        silent.close()


def test_stats_file_while_running_and_gone_after(
    ns: Netns, tmp_path: Path, env: dict[str, str]
) -> None:
    cfg = tmp_path / "cfg"
    one_network(cfg)
    pid = started(ns, cfg, env)
    data = stats(cfg, pid)
    assert data["pid"] == pid and data["listen"] == [GW] and data["networks"] == 1
    assert data["limits"]["tcp_per_client"] == 16 and data["faults"] == 0
    os.kill(pid, signal.SIGTERM)
    assert wait_dead(pid)
    assert not (cfg / STATS).exists()


# -- issue 10: a stale network file whose bridge is gone --------------------------------------
def test_stale_listen_address_is_left_out_not_fatal(
    ns: Netns, tmp_path: Path, env: dict[str, str]
) -> None:
    cfg = tmp_path / "cfg"
    one_network(cfg)
    gone = "10.89.250.1"
    (cfg / "oldnet").write_text(f"{gone}\n{'c' * 64} 10.89.250.2  ghost\n")
    res = start_dns(ns, cfg, env, check=False)  # used to fail: "Cannot assign requested address"
    assert res.returncode == 0, res.stderr
    assert f"network oldnet: none of its listen addresses ({gone})" in res.stderr
    pid = pid_of(cfg)
    healthy(ns)
    healthy(ns, tcp=True)
    assert stats(cfg, pid)["listen"] == [GW]
    # the bridge comes back (a later setup): the next reload serves it
    ns.run(["ip", "addr", "add", f"{gone}/32", "dev", "lo"])
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and gone not in stats(cfg, pid)["listen"]:
        time.sleep(0.1)
    assert addrs(query(ns, gone, "ghost", source="127.0.0.1", timeout=5)) == ["10.89.250.2"]


def test_all_listen_addresses_gone_is_nothing_to_serve(
    ns: Netns, tmp_path: Path, env: dict[str, str]
) -> None:
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "oldnet").write_text("10.89.250.1\n")
    res = start_dns(ns, cfg, env, check=False)
    assert res.returncode == 0 and "10.89.250.1" in res.stderr
    assert not (cfg / "aardvark.pid").exists()
