"""Crashes and hostile names, with burrow run as the unprivileged test user.

Each daemon burrow runs for a world (the namespace holder, the connector, burrow-dns, the port
forwarder) is killed with SIGKILL; `burrow status` must then say so (exit 1, naming the fix),
and `burrow up` must bring back everything it served. `sandbox create` is killed at points
spread over its run, after which `burrow up` converges and nothing is left behind. Every address
used is in namespaces these tests create, or the host's loopback.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netns import statefiles
from tests.integration.test_rootless_sandbox import free_ports, serve, sh, tcp

pytestmark = pytest.mark.rootless

PY = "/usr/bin/python3"


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"environment: {tool} is not installed")


def status(rl: Any, *, ok: bool) -> dict[str, Any]:
    res = rl.burrow("status", "--format", "json", timeout=30)
    info: dict[str, Any] = json.loads(res.out)
    if ok:
        assert res.rc == 0 and info["problems"] == [], info
    else:
        assert res.rc == 1 and info["problems"], info
        assert all("burrow up" in p for p in info["problems"]), info["problems"]
    return info


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone between open and read: ESRCH
        return False


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _alive(pid)


def host_pid(holder: int, ns_pid: int) -> int:
    """The host pid of a process the holder's PID namespace knows as `ns_pid`."""
    pidns = os.stat(f"/proc/{holder}/ns/pid").st_ino
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/pid").st_ino != pidns:
                continue
            lines = Path(f"/proc/{entry}/status").read_text().splitlines()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        nspid = next((ln.split()[1:] for ln in lines if ln.startswith("NSpid:")), [])
        if nspid and int(nspid[-1]) == ns_pid:
            return int(entry)
    raise AssertionError(f"no process with pid {ns_pid} in the namespace")


def up(rl: Any) -> str:
    res = rl.burrow("up", timeout=120)
    assert res.rc == 0, res
    return str(res.out)


def ls(rl: Any) -> dict[str, dict[str, Any]]:
    rows = json.loads(rl.burrow("sandbox", "ls", "--format", "json", check=True).out)
    return {r["name"]: r for r in rows}


@pytest.fixture
def two(rl: Any) -> Iterator[tuple[Any, int]]:
    """Sandboxes a and b, each publishing one port (base, base+1) with a server behind it."""
    base = free_ports(3)
    rl.burrow("sandbox", "create", "a", "-p", f"127.0.0.1:{base}:80", check=True, timeout=60)
    rl.burrow("sandbox", "create", "b", "-p", f"127.0.0.1:{base + 1}:80", check=True, timeout=60)
    servers = [serve(rl, "a", "t:80", "a"), serve(rl, "b", "t:80", "b")]
    yield rl, base
    for p in servers:
        p.kill()
        p.wait()


def _both_forwarded(base: int) -> None:
    assert tcp("127.0.0.1", base) == b"a:hi"
    assert tcp("127.0.0.1", base + 1) == b"b:hi"


# -- names ------------------------------------------------------------------------------------
def test_path_names_are_refused_everywhere(rl: Any) -> None:
    rl.burrow("sandbox", "create", "victim", check=True, timeout=60)
    record = Path(rl.runtime) / "burrow" / "sandboxes" / "victim.json"
    assert record.exists()
    bad = "../sandboxes/victim"
    for argv in (["network", "rm", bad], ["network", "inspect", bad],
                 ["network", "create", bad], ["sandbox", "inspect", bad],
                 ["sandbox", "rm", bad], ["sandbox", "create", bad],
                 ["network", "connect", bad, "victim"], ["network", "connect", "burrow", bad],
                 ["network", "disconnect", "burrow", bad], ["exec", bad, "--", "true"]):
        res = rl.burrow(*argv, timeout=30)
        assert res.rc != 0, argv
        assert "letters, digits" in res.err, (argv, res.err)  # the error names the rule
    assert record.exists()
    assert ls(rl)["victim"]["state"] == "running"


# -- each daemon killed, then `burrow up` --------------------------------------------------------
def test_forwarder_killed_all_ports_come_back(two: tuple[Any, int]) -> None:
    rl, base = two
    _both_forwarded(base)
    kill(status(rl, ok=True)["forwarder"]["pid"])
    st = status(rl, ok=False)
    assert st["forwarder"] is None and any("forwarder" in p for p in st["problems"])
    out = up(rl)
    assert "sandbox a" in out and "sandbox b" in out
    status(rl, ok=True)
    _both_forwarded(base)
    # A command that starts a forwarder publishes every recorded port, not only its own.
    kill(status(rl, ok=True)["forwarder"]["pid"])
    rl.burrow("sandbox", "create", "c", "-p", f"127.0.0.1:{base + 2}:80", check=True,
              timeout=60)
    serve(rl, "c", "t:80", "c").kill()
    status(rl, ok=True)
    _both_forwarded(base)
    ports = json.loads(rl.burrow("port", "ls", "--format", "json", check=True).out)
    assert {p["sandbox"] for p in ports} == {"a", "b", "c"}


def test_dns_killed_is_reported_and_restarted(rl: Any) -> None:
    rl.burrow("sandbox", "create", "a", check=True, timeout=60)
    rl.burrow("sandbox", "create", "b", check=True, timeout=60)
    st = status(rl, ok=True)
    holder = st["namespace"]["holder_pid"]
    kill(host_pid(holder, st["dns"]["pid_in_namespace"]))
    st = status(rl, ok=False)
    assert st["dns"] is None and any("burrow-dns" in p for p in st["problems"])
    assert "burrow-dns" in up(rl)
    status(rl, ok=True)
    b_ip = ls(rl)["b"]["ips"][0]
    assert b_ip in sh(rl, "a", "getent ahostsv4 b").out


def test_holder_killed_sandboxes_are_lost_then_recreated(two: tuple[Any, int]) -> None:
    rl, base = two
    before = ls(rl)
    holder = status(rl, ok=True)["namespace"]["holder_pid"]
    kill(holder)
    rows = ls(rl)
    assert {n: r["state"] for n, r in rows.items()} == {"a": "lost", "b": "lost"}
    st = status(rl, ok=False)
    assert any("holder" in p for p in st["problems"])
    assert any("a, b lost" in p for p in st["problems"])
    out = up(rl)
    assert "re-created sandbox a" in out and "re-created sandbox b" in out
    status(rl, ok=True)
    after = ls(rl)
    assert {n: (r["state"], r["ips"], r["ports"]) for n, r in after.items()} == \
        {n: ("running", r["ips"], r["ports"]) for n, r in before.items()}
    # The servers died with the namespace; new ones are reached through the same ports.
    servers = [serve(rl, "a", "t:80", "a"), serve(rl, "b", "t:80", "b")]
    try:
        _both_forwarded(base)
        assert after["b"]["ips"][0] in sh(rl, "a", "getent ahostsv4 b").out
    finally:
        for p in servers:
            p.kill()


def test_holder_killed_next_create_keeps_the_records(rl: Any) -> None:
    rl.burrow("sandbox", "create", "a", check=True, timeout=60)
    kill(status(rl, ok=True)["namespace"]["holder_pid"])
    rl.burrow("sandbox", "create", "c", check=True, timeout=60)
    rows = ls(rl)
    assert {n: r["state"] for n, r in rows.items()} == {"a": "running", "c": "running"}
    assert rows["a"]["ips"] != rows["c"]["ips"]
    status(rl, ok=True)


SERVER6 = """
import socket,sys
s=socket.socket(socket.AF_INET6); s.bind(('::1',0)); s.listen(1); print(s.getsockname()[1],flush=True)
c,_=s.accept(); c.sendall(b'v6ok'); c.close()
"""
CONNECT = ("import socket,sys;c=socket.create_connection((sys.argv[1],int(sys.argv[2])),5);"
           "print(c.recv(10).decode())")


def test_slirp4netns_killed_repair_keeps_ipv6(rl: Any) -> None:
    _need("slirp4netns")
    try:
        socket.socket(socket.AF_INET6).close()
    except OSError:
        pytest.skip("environment: no IPv6 on this host")
    rl.burrow("--connector", "slirp4netns", "--allow-host-loopback", "sandbox", "create", "e",
              check=True, timeout=60)
    kill(status(rl, ok=True)["connector"]["pid"])
    assert any("connector" in p for p in status(rl, ok=False)["problems"])
    up(rl)
    st = status(rl, ok=True)
    assert st["connector"]["kind"] == "slirp4netns" and st["connector"]["host_loopback"]
    # The host side: a server on ::1 (as root: any process on the host's loopback will do).
    srv = subprocess.Popen([PY, "-c", SERVER6], stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout is not None
        port = srv.stdout.readline().strip()
        res = rl.burrow("exec", "e", "--", PY, "-c", CONNECT, "fd00::2", port, timeout=30)
        assert res.out.strip() == "v6ok", res
    finally:
        srv.kill()
        srv.wait()


def test_pasta_killed_is_repaired_with_pasta(rl: Any) -> None:
    _need("pasta")
    rl.burrow("--connector", "pasta", "sandbox", "create", "p", check=True, timeout=60)
    kill(status(rl, ok=True)["connector"]["pid"])
    up(rl)
    assert status(rl, ok=True)["connector"]["kind"] == "pasta"


# -- fault injection: SIGKILL at spread-out points of `sandbox create` ---------------------------
def _world_leftovers(rl: Any, holder: int) -> tuple[int, int]:
    """(sandbox netns files, veth host ends) inside the world."""
    join = ["nsenter", "--preserve-credentials", "-U", "-m", "-n", "-t", str(holder), "--"]
    files = rl.run([*join, "ls", f"{rl.runtime}/burrow/netns"], check=True).out.split()
    links = json.loads(rl.run([*join, "ip", "-j", "-d", "link", "show", "type", "veth"],
                              check=True).out or "[]")
    return len(files), len(links)


def test_killed_create_converges(rl: Any) -> None:
    base = free_ports(8)
    rl.burrow("sandbox", "create", "keep", "-p", f"127.0.0.1:{base}:80", check=True, timeout=60)
    rng = random.Random(1207)  # spread, but the same points on every run
    delays = sorted(rng.uniform(0.05, 1.6) for _ in range(6))
    for i, delay in enumerate(delays):
        name = f"k{i}"
        p = rl.popen(["burrow", "sandbox", "create", name, "-p", f"127.0.0.1:{base + 1 + i}:80"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        # runuser's child is the burrow process itself: kill it, not runuser.
        kids = Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()
        for kid in kids:
            try:
                os.kill(int(kid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        p.wait(timeout=30)
        if i % 2:  # and the forwarder too, as if the publish had crashed it
            fwd = json.loads(rl.burrow("status", "--format", "json").out)["forwarder"]
            if fwd:
                kill(fwd["pid"])
        up(rl)
        st = status(rl, ok=True)
        rows = ls(rl)
        assert all(r["state"] == "running" for r in rows.values()), rows
        files, veths = _world_leftovers(rl, st["namespace"]["holder_pid"])
        assert files == len(rows) and veths == len(rows), (delay, rows, files, veths)
    srv = serve(rl, "keep", "t:80", "keep")
    try:
        assert tcp("127.0.0.1", base) == b"keep:hi"
        for name, r in ls(rl).items():
            if name != "keep":
                assert r["ports"], r  # a finished create kept its port, and it is forwarded
                port = int(r["ports"][0].split(":")[1])
                s = serve(rl, name, "t:80", name)
                try:
                    assert tcp("127.0.0.1", port) == f"{name}:hi".encode()
                finally:
                    s.kill()
    finally:
        srv.kill()


def test_killed_restore_converges(rl: Any) -> None:
    base = free_ports(2)
    rl.burrow("sandbox", "create", "a", "-p", f"127.0.0.1:{base}:80", check=True, timeout=60)
    rl.burrow("sandbox", "create", "b", "--network", "burrow:alias=bee", check=True, timeout=60)
    want = {n: r["ips"] for n, r in ls(rl).items()}
    for delay in (0.0, 0.15, 0.3):  # restoring two sandboxes takes ~0.4 s here
        kill(status(rl, ok=True)["namespace"]["holder_pid"])
        p = rl.popen(["burrow", "up"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert p.stdout is not None
        p.stdout.readline()  # the new world is up; now it re-creates the sandboxes
        time.sleep(delay)
        for kid in Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split():
            try:
                os.kill(int(kid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        p.wait(timeout=30)
        up(rl)
        st = status(rl, ok=True)
        rows = ls(rl)
        assert {n: (r["state"], r["ips"]) for n, r in rows.items()} == \
            {n: ("running", ips) for n, ips in want.items()}
        assert _world_leftovers(rl, st["namespace"]["holder_pid"]) == (2, 2)
    srv = serve(rl, "a", "t:80", "a")
    try:
        assert tcp("127.0.0.1", base) == b"a:hi"
        assert want["a"][0] in sh(rl, "b", "getent ahostsv4 a").out
        assert want["b"][0] in sh(rl, "a", "getent ahostsv4 bee").out
    finally:
        srv.kill()


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        try:
            kids = [int(k) for task in Path(f"/proc/{todo.pop()}/task").iterdir()
                    for k in (task / "children").read_text().split()]
        except OSError:
            continue
        out += kids
        todo += kids
    return out


def test_killed_command_takes_its_world_commands_along(rl: Any) -> None:
    """A burrow SIGKILLed while it runs a command in the world (here an engine setup, kept
    waiting on the engine's lock) must not leave that command running: the orphan would go on
    changing the sandbox while the next `burrow up` tears it down and makes it again."""
    rl.burrow("sandbox", "create", "a", check=True, timeout=60)
    lock = Path(rl.runtime) / "burrow" / "netavark" / statefiles.ENGINE_LOCK
    fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        p = rl.popen(["burrow", "sandbox", "create", "b"], stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        inner: list[int] = []
        while not inner and time.monotonic() < deadline:
            inner = [d for d in _descendants(p.pid) if b"burrow-netavark" in _cmdline(d)]
            time.sleep(0.02)
        assert inner, "sandbox create never ran the engine"
        # runuser's child is the burrow process itself: kill it, not runuser.
        os.kill(int(Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()[0]),
                signal.SIGKILL)
        p.wait(timeout=30)
        deadline = time.monotonic() + 5
        while any(_alive(d) for d in inner) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not any(_alive(d) for d in inner), "the engine call outlived its burrow"
    finally:
        os.close(fd)
    up(rl)
    assert set(ls(rl)) == {"a"}  # the half-made b was dropped


def test_cut_resolv_conf_is_written_again(rl: Any) -> None:
    """`burrow up` killed while it wrote a restored sandbox's resolv.conf (truncated, not yet
    written) left it empty: names did not resolve in it, `burrow status` said nothing, and no
    later `burrow up` wrote it again (the sandbox runs). One way test_killed_restore_converges
    failed once: `getent ahostsv4 a` in b found nothing after three killed restores."""
    rl.burrow("sandbox", "create", "a", check=True, timeout=60)
    rl.burrow("sandbox", "create", "b", check=True, timeout=60)
    a = ls(rl)["a"]["ips"][0]
    sandboxes = Path(rl.runtime) / "burrow" / "sandboxes"
    resolv, hosts = sandboxes / "b.resolv.conf", sandboxes / "b.hosts"
    want = resolv.read_text(), hosts.read_text()
    for f in (resolv, hosts):
        f.write_text("")  # what open(O_TRUNC) leaves when the write never comes
        assert sh(rl, "b", "getent ahostsv4 a", check=False).rc != 0 or f is hosts
        assert "wrote resolv.conf and hosts of sandbox b again" in up(rl)
        assert (resolv.read_text(), hosts.read_text()) == want
        assert a in sh(rl, "b", "getent ahostsv4 a").out
    assert "wrote resolv.conf" not in up(rl)  # nothing cut: nothing written


def test_holder_whose_maker_died_unrecorded_is_reaped(rl: Any) -> None:
    """`burrow up` killed after it spawned the holder but before it recorded it: only the
    pending file knows that world; the next command must kill it, not leak it forever."""
    p = rl.popen(["unshare", "--user", "--map-root-user", "--net", "--pid", "--fork",
                  "--kill-child", "sleep", "1000"])
    deadline = time.monotonic() + 5
    kids: list[str] = []
    while not kids and time.monotonic() < deadline:
        kids = Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()
        time.sleep(0.01)
    unshare = int(kids[0])
    start = int(Path(f"/proc/{unshare}/stat").read_text().rsplit(")", 1)[1].split()[19])
    state = Path(rl.runtime) / "burrow"
    rl.run(["sh", "-c", f"mkdir -m 700 {state} && echo "
            f"'{json.dumps({'unshare': {'pid': unshare, 'start': start}})}' "
            f"> {state}/holder.pending.json"], check=True)
    up(rl)
    p.wait(timeout=10)
    assert not _alive(unshare)
    assert not (state / "holder.pending.json").exists()
    status(rl, ok=True)
