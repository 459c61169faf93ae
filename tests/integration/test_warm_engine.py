"""The warm engine behind burrow-netavark, end to end, in throwaway namespaces.

Every client runs inside a test netns (nsenter -n -m), so the engines it spawns live there
too and die with the namespace (Netns.close kills what is inside). Commands used are ones
that fail before changing anything (a missing netns path, `{}` as input) or `version`.
`BURROW_ENGINE_STATS=1` makes the client add a last stderr line saying who served the call;
that is how these tests tell warm from in-process, never by timing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from netns.client import SOCKET_NAME
from tests.nsutil import REPO, VENV_BIN, Netns, have, unique

CLI = str(VENV_BIN / "burrow-netavark")
NOBODY = "65534"
STATS = re.compile(rb"burrow-engine: served-by=(.*)\n\Z")

pytestmark = pytest.mark.root


@dataclass
class Result:
    code: int
    out: bytes
    err: bytes  # without the stats line
    served_by: str

    @property
    def warm(self) -> bool:
        return self.served_by.startswith("engine ")

    @property
    def engine_pid(self) -> int:
        match = re.search(r"pid=(\d+)", self.served_by)
        assert match, self.served_by
        return int(match.group(1))

    def contract(self) -> tuple[int, bytes, bytes]:
        return self.code, self.out, self.err


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BURROW_")}
    # Engines that a failed test leaves behind still go away on their own.
    env["BURROW_ENGINE_IDLE"] = "20"
    env.update(extra)
    return env


def call(
    ns: Netns,
    config: str,
    *args: str,
    stdin: bytes = b"",
    user: str | None = None,
    stats: bool = True,
    env: dict[str, str] | None = None,
) -> Result:
    cmd = [CLI, "--config", config, *args]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    env = dict(env or {})
    if stats:
        env["BURROW_ENGINE_STATS"] = "1"
    res = subprocess.run(ns.argv(cmd), input=stdin, capture_output=True, env=_env(**env),
                         cwd=REPO, timeout=60)  # fmt: skip
    err, served_by = res.stderr, ""
    if stats:
        match = STATS.search(res.stderr)
        assert match, f"no stats line in stderr: {res.stderr!r}"
        err, served_by = res.stderr[: match.start()], match.group(1).decode()
    return Result(res.returncode, res.stdout, err, served_by)


def in_process(ns: Netns, config: str, *args: str, stdin: bytes = b"") -> Result:
    return call(ns, config, *args, stdin=stdin, env={"BURROW_ENGINE": "off"})


def wait_warm(ns: Netns, config: str, timeout: float = 20) -> Result:
    """Poll with `version` (which never spawns) until an engine answers."""
    deadline = time.monotonic() + timeout
    while True:
        res = call(ns, config, "version")
        if res.warm:
            return res
        assert time.monotonic() < deadline, f"engine never came up: {res.served_by}"
        time.sleep(0.05)


def start_engine(ns: Netns, config: str, env: dict[str, str] | None = None) -> int:
    """Make the client spawn an engine (a setup that fails before touching anything)."""
    first = call(ns, config, "setup", "/nonexistent/netns", stdin=b"{}", env=env)
    assert first.served_by == "in-process reason=spawned", first.served_by
    return wait_warm(ns, config).engine_pid


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def config() -> Iterator[str]:
    """A short, world-traversable config dir (sun_path is 108 bytes; nobody must reach it)."""
    path = tempfile.mkdtemp(prefix=unique("we") + "-", dir="/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ns(host_ns: Netns) -> Netns:
    return host_ns


def test_engine_starts_on_demand_and_serves_the_next_call_warm(ns: Netns, config: str) -> None:
    first = call(ns, config, "setup", "/nonexistent/netns", stdin=b"{}")
    assert first.served_by == "in-process reason=spawned"
    pid = wait_warm(ns, config).engine_pid
    second = call(ns, config, "setup", "/nonexistent/netns", stdin=b"{}")
    assert second.warm and second.engine_pid == pid
    assert second.contract() == first.contract()
    assert first.code == 1 and b'"error"' in first.out
    sock = os.stat(os.path.join(config, SOCKET_NAME))
    assert sock.st_mode & 0o777 == 0o600


def test_version_and_engine_off_never_spawn(ns: Netns, config: str) -> None:
    res = call(ns, config, "version")
    assert res.served_by.startswith("in-process reason=no-engine"), res.served_by
    res = call(ns, config, "setup", "/nonexistent/netns", stdin=b"{}", env={"BURROW_ENGINE": "off"})
    assert res.served_by == "in-process reason=off"
    time.sleep(0.3)
    assert not os.path.exists(os.path.join(config, SOCKET_NAME))


def test_netns_fd_arrives_and_is_the_containers(
    ns: Netns, netns_factory: Callable[[], Netns], config: str
) -> None:
    ctr = netns_factory()
    start_engine(ns, config)
    # `{}` fails validation after the netns is opened, before anything changes.
    warm = call(ns, config, "setup", ctr.path, stdin=b"{}")
    assert warm.warm
    assert f"netns-ino={os.stat(ctr.path).st_ino}" in warm.served_by
    assert os.stat(ctr.path).st_ino != os.stat(ns.path).st_ino
    assert warm.contract() == in_process(ns, config, "setup", ctr.path, stdin=b"{}").contract()
    # A path the client cannot open is passed through, and fails as it does in-process.
    missing = call(ns, config, "setup", "/nonexistent/netns", stdin=b"{}")
    assert missing.warm and "netns-ino=-" in missing.served_by
    assert missing.contract() == in_process(ns, config, "setup", "/nonexistent/netns",
                                            stdin=b"{}").contract()  # fmt: skip


@pytest.mark.parametrize(
    "args,stdin,code",
    [
        (["version"], b"", 0),
        (["--help"], b"", 0),
        (["bogus"], b"", 2),
        (["--rootless=maybe", "setup", "/n"], b"{}", 2),
        (["setup", "/nonexistent/netns"], b"{}", 1),
        (["create"], b"not json", 1),
    ],
    ids=["version", "help", "usage-error", "bad-option-value", "missing-netns", "bad-json"],
)
def test_contract_is_identical_warm_and_in_process(
    ns: Netns, config: str, args: list[str], stdin: bytes, code: int
) -> None:
    start_engine(ns, config)
    warm = call(ns, config, *args, stdin=stdin)
    assert warm.warm, warm.served_by
    cold = in_process(ns, config, *args, stdin=stdin)
    assert warm.contract() == cold.contract()
    # And without the stats line, byte for byte.
    plain = call(ns, config, *args, stdin=stdin, stats=False)
    assert plain.contract() == cold.contract()
    assert warm.code == code
    if code == 2:
        assert warm.out == b"" and warm.err.startswith(b"error:")
    if code == 1:
        assert re.fullmatch(rb'\{"error":".+"\}\n', warm.out), warm.out


def test_peer_in_another_netns_is_served_in_its_own_netns(
    ns: Netns, netns_factory: Callable[[], Netns], config: str
) -> None:
    """Rootless Podman re-creates its netns after the last container: one engine serves all."""
    from tests.engine_util import network, options

    pid = start_engine(ns, config)
    other, ctr = netns_factory(), netns_factory()
    bridge = unique("wb")
    net = network(unique("n"), bridge, [("10.79.0.0/24", "10.79.0.1")])
    opts = options("c", [(net, {"interface_name": "eth0", "static_ips": ["10.79.0.2"]})])
    res = call(other, config, "--firewall-driver", "none", "setup", ctr.path,
               stdin=json.dumps(opts).encode())  # fmt: skip
    assert res.code == 0, res.out
    assert res.warm and res.engine_pid == pid
    # The work happened in the caller's netns, not the engine's.
    assert bridge in other.link_names() and bridge not in ns.link_names()
    res = call(other, config, "--firewall-driver", "none", "teardown", ctr.path,
               stdin=json.dumps(opts).encode())  # fmt: skip
    assert res.code == 0 and res.warm
    assert other.link_names() == {"lo"}
    # The engine is back home: it still serves its own world.
    assert call(ns, config, "version").engine_pid == pid


def test_peer_in_another_user_ns_is_sent_back_in_process(ns: Netns, config: str) -> None:
    pid = start_engine(ns, config)
    cmd = ["unshare", "--user", "--map-root-user", CLI, "--config", config, "setup", "/nonexistent/netns"]
    env = _env(BURROW_ENGINE_STATS="1")
    res = subprocess.run(ns.argv(cmd), input=b"{}", capture_output=True, env=env, cwd=REPO, timeout=60)
    match = STATS.search(res.stderr)
    assert match, res.stderr
    # A peer in another user namespace is not ours to serve (its uids mean something else);
    # the peer's SO_PEERCRED uid maps to ours, so the engine explains instead of hanging up.
    assert match.group(1).decode().startswith("in-process"), match.group(1)
    assert res.returncode == 1 and b"invalid namespace path" in res.stdout
    assert call(ns, config, "version").engine_pid == pid


@pytest.mark.skipif(not have("setpriv"), reason="environment: setpriv (util-linux) missing")
def test_peer_with_another_uid_is_refused(ns: Netns, config: str) -> None:
    pid = start_engine(ns, config)
    expected = in_process(ns, config, "version")
    # Mode 0600 stops it at connect()...
    res = call(ns, config, "version", user=NOBODY)
    assert res.served_by.startswith("in-process reason=unreachable"), res.served_by
    assert res.contract() == expected.contract()
    # ...and SO_PEERCRED stops it even if the mode is loosened.
    os.chmod(os.path.join(config, SOCKET_NAME), 0o666)
    res = call(ns, config, "version", user=NOBODY)
    assert res.served_by.startswith("in-process reason=refused"), res.served_by
    assert res.contract() == expected.contract()
    assert f"uid {NOBODY} is not 0" in Path(config, "burrow-engine.log").read_text()
    assert call(ns, config, "version").engine_pid == pid


def test_idle_engine_exits_and_removes_its_socket(ns: Netns, config: str) -> None:
    pid = start_engine(ns, config, env={"BURROW_ENGINE_IDLE": "1"})
    sock = os.path.join(config, SOCKET_NAME)
    wait_until(lambda: gone(pid), 10, "the idle engine to exit")
    assert not os.path.exists(sock)
    assert "idle for 1 s" in Path(config, "burrow-engine.log").read_text()
    # The next command starts a new one.
    assert start_engine(ns, config) != pid


def test_engine_exits_when_its_socket_is_removed(ns: Netns, config: str) -> None:
    pid = start_engine(ns, config)
    os.unlink(os.path.join(config, SOCKET_NAME))
    wait_until(lambda: gone(pid), 5, "the engine to notice its socket is gone")
    assert "socket path removed" in Path(config, "burrow-engine.log").read_text()


def test_stale_socket_is_repaired(ns: Netns, config: str) -> None:
    sock_path = os.path.join(config, SOCKET_NAME)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(sock_path)  # a socket file with nobody listening: an engine that was killed
    stale.close()
    res = call(ns, config, "setup", "/nonexistent/netns", stdin=b"{}")
    assert res.served_by == "in-process reason=spawned"
    assert res.code == 1
    warm = wait_warm(ns, config)
    assert warm.warm
    assert not [n for n in os.listdir(config) if n.endswith(".tmp")]


def test_concurrent_clients_are_all_served_correctly(ns: Netns, config: str) -> None:
    start_engine(ns, config)
    expected = in_process(ns, config, "setup", "/nonexistent/netns", stdin=b"{}").contract()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(
            lambda _: call(ns, config, "setup", "/nonexistent/netns", stdin=b"{}"), range(16)
        ))  # fmt: skip
    assert all(r.contract() == expected for r in results)
    assert sum(r.warm for r in results) >= 8  # queued on the one engine, not refused


def test_peer_in_another_mount_ns_with_the_same_state_dir_is_served_warm(ns: Netns, config: str) -> None:
    """Rootless Podman runs each netavark call in a fresh mount ns of its rootless netns."""
    pid = start_engine(ns, config)
    cmd = ["unshare", "--mount", "--propagation", "private", CLI, "--config", config, "setup",
           "/nonexistent/netns"]  # fmt: skip
    env = _env(BURROW_ENGINE_STATS="1")
    res = subprocess.run(ns.argv(cmd), input=b"{}", capture_output=True, env=env, cwd=REPO, timeout=60)
    match = STATS.search(res.stderr)
    assert match and match.group(1).decode().startswith("engine"), res.stderr
    assert f"pid={pid}".encode() in match.group(1)
    assert res.returncode == 1 and b"invalid namespace path" in res.stdout


def test_engine_says_what_it_is(ns: Netns, config: str) -> None:
    pid = start_engine(ns, config)
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").strip()
    assert cmdline == f"burrow engine {config}".encode()
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "burrow"
    log = Path(config, "burrow-engine.log").read_text()
    assert f"burrow engine {config}[{pid}] INFO netns.server: serving" in log


@pytest.mark.skipif(not have("setpriv"), reason="environment: setpriv (util-linux) missing")
def test_engines_without_config_leave_no_files_behind(ns: Netns) -> None:
    """Without --config each network world's engine keeps a socket and log in one shared dir."""
    runtime = tempfile.mkdtemp(prefix=unique("bcx") + "-", dir="/tmp")
    os.chown(runtime, int(NOBODY), int(NOBODY))
    shared = Path(runtime, "burrow")
    env = _env(XDG_RUNTIME_DIR=runtime, BURROW_ENGINE_STATS="1", BURROW_ENGINE_IDLE="1")

    def run(*args: str, stdin: bytes = b"") -> str:
        cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", CLI, *args]
        res = subprocess.run(ns.argv(cmd), input=stdin, capture_output=True, env=env, cwd="/",
                             timeout=60)  # fmt: skip
        match = STATS.search(res.stderr)
        assert match, res.stderr
        return match.group(1).decode()

    def warm_pid() -> int:
        served: list[str] = []
        wait_until(lambda: served.append(run("version")) or served[-1].startswith("engine"),
                   20, "an engine")  # fmt: skip
        return int(re.search(r"pid=(\d+)", served[-1]).group(1))  # type: ignore[union-attr]

    def engine_files() -> list[str]:
        return sorted(n for n in os.listdir(shared) if n.startswith("engine-"))

    try:
        assert run("setup", "/nonexistent/netns", stdin=b"{}") == "in-process reason=spawned"
        first = warm_pid()
        mine = engine_files()
        assert len(mine) == 2 and mine[0].endswith(".log") and mine[1].endswith(".sock"), mine
        os.kill(first, signal.SIGKILL)  # leaves its socket and log, as any crash would
        wait_until(lambda: gone(first), 10, "the killed engine to go")
        for name in ("engine-1-1.log", "engine-1-1.sock"):  # a world that is long gone
            Path(shared, name).touch()
            os.chown(shared / name, int(NOBODY), int(NOBODY))
        assert run("setup", "/nonexistent/netns", stdin=b"{}") == "in-process reason=spawned"
        second = warm_pid()
        assert second != first
        assert engine_files() == mine  # the dead world's pair swept, ours reused
        assert "removed files of engines that died: engine-1-1.sock engine-1-1.log" in (
            Path(shared, mine[0]).read_text())
        wait_until(lambda: gone(second), 15, "the idle engine to exit")
        assert engine_files() == []  # an engine that exits takes its log along
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
