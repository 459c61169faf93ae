"""burrow-dns as a daemon: start errors, pid file, closed fds, reload under load, exit on
empty config, and a hypothesis fuzz over UDP and TCP. Each test has its own namespace."""

from __future__ import annotations

import os
import random
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.exception
import dns.message
import dns.rcode
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.test_dns_support import (
    BURROW_DNS,
    addrs,
    alive,
    ns_socket,
    pid_of,
    query,
    start_dns,
    wait_dead,
)
from tests.nsutil import Netns, need_root

pytestmark = pytest.mark.root

GW, CTR = "10.89.7.1", "10.89.7.10"


def one_network(cfg: Path, extra: list[str] | None = None, name: str = "dnr") -> None:
    cfg.mkdir(parents=True, exist_ok=True)
    lines = [GW] + [f"{i:064x} 10.89.7.{10 + i}  r{i},ra{i}" for i in range(10)] + (extra or [])
    tmp = cfg / f".{name}.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    tmp.rename(cfg / name)  # atomic, as a careful writer would do


@pytest.fixture
def ns(netns_factory: Callable[[], Netns]) -> Netns:
    n = netns_factory()
    n.run(["ip", "addr", "add", f"{GW}/24", "dev", "lo"])
    for i in range(10):
        n.run(["ip", "addr", "add", f"10.89.7.{10 + i}/32", "dev", "lo"])
    return n


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("")  # no host upstream: nothing can leave the namespace
    return {"BURROW_DNS_RESOLV_CONF": str(resolv)}


# -- start --------------------------------------------------------------------------------
def test_start_writes_pid_file_and_serves_at_once(ns: Netns, tmp_path: Path,
                                                   env: dict[str, str]) -> None:
    cfg = tmp_path / "cfg"
    one_network(cfg)
    res = start_dns(ns, cfg, env)
    assert res.returncode == 0, res.stderr
    raw = (cfg / "aardvark.pid").read_text()
    assert raw.isdigit()  # no newline, like aardvark
    assert alive(int(raw))
    # bound before the parent returned: the very first query is answered
    assert addrs(query(ns, GW, "r3", source=CTR, timeout=1)) == ["10.89.7.13"]
    assert addrs(query(ns, GW, "r3", source=CTR, tcp=True, timeout=1)) == ["10.89.7.13"]


def test_missing_config_dir_fails_fast(ns: Netns, tmp_path: Path, env: dict[str, str]) -> None:
    res = start_dns(ns, tmp_path / "nope", env, check=False)
    assert res.returncode == 1
    assert "does not exist" in res.stderr


def test_port_clash_fails_with_the_address(ns: Netns, tmp_path: Path,
                                            env: dict[str, str]) -> None:
    cfg = tmp_path / "cfg"
    one_network(cfg)
    blocker = ns_socket(ns, socket.AF_INET, socket.SOCK_DGRAM, (GW, 53))
    with blocker:
        res = start_dns(ns, cfg, env, check=False)
    assert res.returncode == 1
    assert f"failed to bind udp listener on {GW}:53" in res.stderr
    assert not (cfg / "aardvark.pid").exists()
    blocker = ns_socket(ns, socket.AF_INET, socket.SOCK_STREAM, (GW, 53))
    with blocker:
        blocker.listen(1)
        res = start_dns(ns, cfg, env, check=False)
    assert res.returncode == 1 and f"failed to bind tcp listener on {GW}:53" in res.stderr


def test_second_instance_on_same_config_is_refused(ns: Netns, tmp_path: Path,
                                                   env: dict[str, str]) -> None:
    cfg = tmp_path / "cfg"
    one_network(cfg)
    start_dns(ns, cfg, env)
    first = pid_of(cfg)
    res = start_dns(ns, cfg, env, check=False)
    assert res.returncode == 1 and "failed to bind" in res.stderr
    assert pid_of(cfg) == first and alive(first)


def test_empty_config_dir_exits_zero_without_a_process(ns: Netns, tmp_path: Path,
                                                        env: dict[str, str]) -> None:
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "aardvark.pid").write_text("999999")  # stale
    res = start_dns(ns, cfg, env, check=False)
    assert res.returncode == 0
    assert not (cfg / "aardvark.pid").exists()


def test_bad_file_is_skipped_and_reported(ns: Netns, tmp_path: Path,
                                          env: dict[str, str]) -> None:
    cfg = tmp_path / "cfg"
    one_network(cfg)
    (cfg / "broken").write_text("10.89.7.1\nthis line is bad\n")
    (cfg / "worse").write_text("not-an-ip\n")
    log = tmp_path / "log"
    res = ns.run([BURROW_DNS, "--config", str(cfg), "-p", "53", "--log-file", str(log), "run"],
                 env={**os.environ, **env}, check=False)
    assert res.returncode == 0
    assert "broken" in res.stderr and "worse" in res.stderr
    assert addrs(query(ns, GW, "r1", source=CTR)) == ["10.89.7.11"]


def test_inherited_fds_are_closed(ns: Netns, tmp_path: Path, env: dict[str, str]) -> None:
    cfg = tmp_path / "cfg"
    one_network(cfg)
    r, w = os.pipe()
    try:
        res = subprocess.run(
            ns.argv([BURROW_DNS, "--config", str(cfg), "-p", "53", "run"]), pass_fds=(r, w),
            env={**os.environ, **env}, capture_output=True, text=True, timeout=20,
        )
        assert res.returncode == 0, res.stderr
        pid = pid_of(cfg)
        targets = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        pipe = os.readlink(f"/proc/self/fd/{r}")
        assert pipe not in targets
        # and the pipe's write end is not held: the read end sees EOF once we close ours
        os.close(w)
        w = -1
        os.set_blocking(r, False)
        assert os.read(r, 1) == b""
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def test_version_and_usage() -> None:
    out = subprocess.run([BURROW_DNS, "version"], capture_output=True, text=True, check=True)
    assert '"version"' in out.stdout
    bad = subprocess.run([BURROW_DNS, "-p", "99999", "run"], capture_output=True, text=True)
    assert bad.returncode == 2 and "port" in bad.stderr


# -- reload and exit ----------------------------------------------------------------------
def test_reload_under_load_drops_nothing(ns: Netns, tmp_path: Path, env: dict[str, str]) -> None:
    cfg = tmp_path / "cfg"
    one_network(cfg)
    start_dns(ns, cfg, env)
    pid = pid_of(cfg)
    failures: list[str] = []
    counts = [0, 0]
    stop = threading.Event()

    def hammer(slot: int, tcp: bool) -> None:
        rng = random.Random(slot)
        while not stop.is_set():
            i = rng.randrange(10)
            try:
                r = query(ns, GW, f"r{i}", source=f"10.89.7.{10 + slot}", tcp=tcp, timeout=2)
                if addrs(r) != [f"10.89.7.{10 + i}"]:
                    failures.append(f"r{i}: {r}")
            except (dns.exception.DNSException, OSError) as exc:
                failures.append(f"r{i}: {exc!r}")
            counts[slot] += 1

    threads = [threading.Thread(target=hammer, args=(0, False)),
               threading.Thread(target=hammer, args=(1, True))]
    for t in threads:
        t.start()
    try:
        for k in range(12):
            one_network(cfg, [f"{1000 + k:064x} 10.89.7.{100 + k}  new{k}"])
            if k % 3 == 0:  # listeners come and go too
                (cfg / "dnx").write_text(f"10.89.7.{200 + k}\n")
                ns.run(["ip", "addr", "add", f"10.89.7.{200 + k}/32", "dev", "lo"])
            os.kill(pid, signal.SIGHUP)
            time.sleep(0.15)
            assert addrs(query(ns, GW, f"new{k}", source=CTR)) == [f"10.89.7.{100 + k}"]
            if k:
                assert query(ns, GW, f"new{k - 1}.dns.podman", source=CTR).rcode() == 3
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures, failures[:5]
    assert min(counts) > 20
    assert alive(pid)
    assert addrs(query(ns, "10.89.7.209", "r2", source=CTR)) == ["10.89.7.12"]


def test_exits_and_removes_pid_file_when_no_network_is_left(
    ns: Netns, tmp_path: Path, env: dict[str, str]
) -> None:
    cfg = tmp_path / "cfg"
    one_network(cfg)
    start_dns(ns, cfg, env)
    pid = pid_of(cfg)
    (cfg / "dnr").unlink()
    os.kill(pid, signal.SIGHUP)
    assert wait_dead(pid)
    assert not (cfg / "aardvark.pid").exists()


def test_sigterm_stops_and_cleans_up(ns: Netns, tmp_path: Path, env: dict[str, str]) -> None:
    cfg = tmp_path / "cfg"
    one_network(cfg)
    start_dns(ns, cfg, env)
    pid = pid_of(cfg)
    os.kill(pid, signal.SIGTERM)
    assert wait_dead(pid)
    assert not (cfg / "aardvark.pid").exists()


# -- fuzz -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fuzz_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Netns]:
    need_root()
    n = Netns()
    n.run(["ip", "addr", "add", f"{GW}/24", "dev", "lo"])
    n.run(["ip", "addr", "add", f"{CTR}/32", "dev", "lo"])
    tmp = tmp_path_factory.mktemp("dnsfuzz")
    cfg = tmp / "cfg"
    one_network(cfg)
    (tmp / "resolv.conf").write_text("nameserver 127.0.0.9\n")  # refused at once: SERVFAIL
    start_dns(n, cfg, {"BURROW_DNS_RESOLV_CONF": str(tmp / "resolv.conf")})
    yield n
    n.close()


def _healthy(n: Netns) -> None:
    assert addrs(query(n, GW, "r4", source=CTR, timeout=2)) == ["10.89.7.14"]


# Garbage, and also near-valid packets: a real header with random flags/counts and a tail.
packets = st.one_of(
    st.binary(max_size=600),
    st.builds(
        lambda flags, counts, tail: struct.pack("!HH4H", 0x1234, flags, *counts) + tail,
        st.integers(0, 0xFFFF), st.tuples(*[st.integers(0, 3)] * 4), st.binary(max_size=300),
    ),
    st.builds(lambda q, cut: q[:cut], st.just(dns.message.make_query("r1", "A").to_wire()),
              st.integers(0, 40)),
    # Names at and past the wire limits, which the resolver forwards (this world's upstream
    # refuses at once) and then answers SERVFAIL for: that reply once killed the server.
    st.builds(
        lambda n, size, last, qtype: struct.pack("!6H", 0x4321, 0x0100, 1, 0, 0, 0)
        + (b"\x3f" + b"a" * 63) * n + bytes([size]) + b"b" * size + last + struct.pack("!H", qtype)
        + b"\x00\x01",
        st.integers(2, 4), st.integers(0, 64), st.sampled_from([b"\x00", b"\xc0\x0c", b""]),
        st.sampled_from([1, 28, 12, 16]),
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(packets, min_size=1, max_size=5))
def test_fuzz_udp(fuzz_world: Netns, batch: list[bytes]) -> None:
    s = ns_socket(fuzz_world, socket.AF_INET, socket.SOCK_DGRAM, (CTR, 0))
    with s:
        for pkt in batch:
            s.sendto(pkt, (GW, 53))
    _healthy(fuzz_world)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(packets, min_size=1, max_size=4), raw=st.booleans())
def test_fuzz_tcp(fuzz_world: Netns, frames: list[bytes], raw: bool) -> None:
    s = ns_socket(fuzz_world, socket.AF_INET, socket.SOCK_STREAM, (CTR, 0))
    with s:
        s.settimeout(2)
        s.connect((GW, 53))
        data = b"".join(f if raw else struct.pack("!H", len(f)) + f for f in frames)
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            while s.recv(65535):
                pass
        except OSError:
            pass  # the server may close on a malformed frame; that is allowed
    _healthy(fuzz_world)
