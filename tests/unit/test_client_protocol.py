"""Client/engine framing, socket path rules and the client's import footprint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netns import client, server
from tests.nsutil import REPO


def test_fields_round_trip() -> None:
    fields = [b"", b"a", b"\0\xff" * 1000, "é".encode()]
    assert client.unpack_fields(client.pack_fields(fields)) == fields


def test_truncated_fields_are_rejected() -> None:
    data = client.pack_fields([b"hello"])
    with pytest.raises(ValueError):
        client.unpack_fields(data[:-1])
    with pytest.raises(ValueError):
        client.unpack_fields(data[:2])


@pytest.mark.parametrize("items", [[], [b""], [b"a", b"", b"b=c=d"], [b"\xff\xfe"]])
def test_string_lists_are_lossless(items: list[bytes]) -> None:
    assert client.decode_strings(client.encode_strings(items)) == items


def test_request_encoding_matches_what_the_engine_reads() -> None:
    env = {b"PATH": b"/bin", b"ODD": b"x=y", b"EMPTY": b"", b"BYTES": b"\xff"}
    data = client.encode_request(["-c", "/cfg", "setup", "/n"], env, b"{}", b"/tmp", 0o027)
    assert data.startswith(client.REQUEST_MAGIC)
    head = len(client.REQUEST_MAGIC) + 4
    assert int.from_bytes(data[len(client.REQUEST_MAGIC) : head], "big") == len(data) - head
    argv, env_f, cwd, umask, stdin = client.unpack_fields(data[head:])
    assert [os.fsdecode(a) for a in client.decode_strings(argv)] == ["-c", "/cfg", "setup", "/n"]
    decoded = dict(server._env_item(i) for i in client.decode_strings(env_f))
    assert decoded == {"PATH": "/bin", "ODD": "x=y", "EMPTY": "", "BYTES": os.fsdecode(b"\xff")}
    assert (cwd, int(umask, 8), stdin) == (b"/tmp", 0o027, b"{}")


def test_engine_executes_version_like_run() -> None:
    # execute() is the engine's whole per-request path minus the socket; `version` is pure.
    engine = server.Engine("/nonexistent/burrow-engine.sock", server.Settings(idle=1.0))
    data = client.encode_request(["version"], {b"A": b"b"}, b"", str(REPO).encode(), 0o022)
    head = len(client.REQUEST_MAGIC) + 4
    req = server.Request.from_fields(client.unpack_fields(data[head:]))
    try:
        frame = engine.execute(req, None)
        assert int.from_bytes(frame[:4], "big") == len(frame) - 4
        reply = client.unpack_fields(frame[4:])
        assert os.getcwd() == "/"  # the engine never keeps a caller's cwd busy
    finally:
        os.chdir(REPO)
    code, out, err, info = reply
    assert (int(code), err) == (0, b"")
    assert json.loads(out)["version"]
    assert info.startswith(f"pid={os.getpid()} served=1".encode())


def test_engine_output_shows_the_callers_netns_path() -> None:
    out, err = server._restore_path(
        '{"error":"netns /proc/self/fd/5: gone, not /proc/self/fd/55"}\n',
        "open /proc/self/fd/5\n",
        "/proc/self/fd/5",
        '/run/netns/we"q',
    )
    assert out == '{"error":"netns /run/netns/we\\"q: gone, not /proc/self/fd/55"}\n'
    assert err == 'open /run/netns/we"q\n'


def test_socket_path_with_config_is_in_the_config_dir(tmp_path: os.PathLike[str]) -> None:
    assert client.socket_path("/run/containers/networks", {}) == (
        "/run/containers/networks/burrow-engine.sock"
    )
    os.chdir(tmp_path)
    try:
        assert client.socket_path("rel", {}) == os.path.join(str(tmp_path), "rel", client.SOCKET_NAME)
    finally:
        os.chdir(REPO)


def test_socket_path_without_config_names_the_world(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    net = os.stat("/proc/self/ns/net").st_ino
    user = os.stat("/proc/self/ns/user").st_ino
    name = f"engine-{net}-{user}.sock"
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert client.socket_path(None, {"XDG_RUNTIME_DIR": "/run/user/0"}) == f"/run/burrow/{name}"
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert client.socket_path(None, {"XDG_RUNTIME_DIR": str(tmp_path)}) == (
        f"{tmp_path}/burrow/{name}"
    )
    if not os.path.exists("/run/user/1000"):
        assert client.socket_path(None, {}) == f"/tmp/burrow-1000/{name}"


def test_socket_path_follows_the_one_runtime_dir_rule(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    """Without --config the engine's socket is in the rootless state directory, found as
    rootless.paths finds it (netns.rundir): a relative or missing XDG_RUNTIME_DIR is an error
    naming the fix, not a silent /tmp/burrow-<uid> (where the client used to go)."""
    from netns import rundir
    from rootless.paths import StatePaths

    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # a user: root's engine is /run/burrow
    monkeypatch.setattr(os, "getuid", lambda: 1000)
    (tmp_path / "run").mkdir(mode=0o700)
    for env in ({"XDG_RUNTIME_DIR": str(tmp_path / "run")}, {"XDG_RUNTIME_DIR": "/"}):
        sock = client.socket_path(None, env)
        assert os.path.dirname(sock) == rundir.burrow_dir(env, 1000)
        assert Path(os.path.dirname(sock)) == StatePaths.for_user(env).root
    for bad in ("relative/run", str(tmp_path / "gone")):
        with pytest.raises(rundir.RuntimeDirError, match=f"XDG_RUNTIME_DIR={bad} .*; .*unset"):
            client.socket_path(None, {"XDG_RUNTIME_DIR": bad})
    assert not (tmp_path / "gone").exists()


def test_an_unusable_runtime_dir_is_said_and_the_command_runs_in_process(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """burrow-netavark without --config: the warm engine has no place, so the command runs
    in-process (it works, only slower) and the user is told the fix once per call."""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    reply, reason, maybe_ran = client._try_engine(
        client.Peek("setup", None, None, None), ["setup"], b"", {"XDG_RUNTIME_DIR": "rel"}, 1.0)
    assert reply is None and not maybe_ran and reason == "no-socket-path (XDG_RUNTIME_DIR)"
    err = capsys.readouterr().err
    assert "XDG_RUNTIME_DIR=rel is not an absolute path" in err and "unset" in err


def test_private_dir_rejects_a_world_writable_dir(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "burrow-x")
    server.ensure_private_dir(path, config_dir=False)
    assert os.stat(path).st_mode & 0o777 == 0o700
    os.chmod(path, 0o777)
    with pytest.raises(PermissionError):
        server.ensure_private_dir(path, config_dir=False)
    server.ensure_private_dir(path, config_dir=True)  # Podman's dir: its mode is Podman's


def test_client_import_is_stdlib_minimal() -> None:
    """The client must not pull in json, socket, typing, argparse or the engine."""
    code = (
        "import sys; before = set(sys.modules); import netns.client; "
        "print(' '.join(sorted(set(sys.modules) - before)))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, env=env, check=True)  # fmt: skip
    added = set(res.stdout.split())
    assert added <= {"netns", "netns.client", "netns.statefiles", "__future__"}, added


def test_client_import_leaves_os_unloaded_under_python_s() -> None:
    """The wrapper Podman execs runs `python -S`, where `os` is not loaded yet (site loads it):
    the fast path uses `posix`, and importing `os` (~1 ms per call) is left to the slow paths."""
    code = (
        f"import sys; sys.path.insert(0, {str(REPO)!r}); before = set(sys.modules); "
        "import netns.client; print(' '.join(sorted(set(sys.modules) - before)))"
    )
    res = subprocess.run([sys.executable, "-S", "-I", "-c", code], capture_output=True,
                         text=True, check=True)  # fmt: skip
    assert set(res.stdout.split()) == {"netns", "netns.client", "netns.statefiles", "__future__"}


@pytest.mark.parametrize("config", ["/run/containers/networks", "/a/b", "//a/b", "/a//b", "/a/./b",
                                    "/a/../b", "/a/b/", "/", "rel", "./rel", "../rel", "/a/.b"])
def test_socket_path_shortcut_agrees_with_abspath(config: str) -> None:
    assert client.socket_path(config, {}) == os.path.join(os.path.abspath(config), client.SOCKET_NAME)


def test_environ_is_what_os_environ_gives() -> None:
    code = (
        f"import sys, os; sys.path.insert(0, {str(REPO)!r}); from netns import client; "
        "print(client.environ() == dict(os.environ))"
    )
    env = {"PATH": "/usr/bin:/bin", "ODD": "x=y", "EMPTY": ""}
    res = subprocess.run([sys.executable, "-S", "-I", "-c", code], capture_output=True,
                         env={**{k: v.encode() for k, v in env.items()}, b"RAW": b"\xff\xfe"},
                         check=True)  # fmt: skip
    assert res.stdout.strip() == b"True"


# --- the engine's request reader: chunking, caps, hostile bytes --------------------------------


def _frame(argv: list[str], stdin: bytes = b"") -> bytes:
    return client.encode_request(argv, {b"A": b"b"}, stdin, b"/", 0o022)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=64), max_size=20), st.binary(max_size=300))
def test_reader_reassembles_any_chunking(cuts: list[int], stdin: bytes) -> None:
    data = _frame(["setup", "/n"], stdin)
    reader = server.RequestReader()
    got, i = None, 0
    for size in [*cuts, len(data)]:
        if i >= len(data):
            break
        assert got is None
        got = reader.feed(data[i : i + size])
        i += size
    assert got is not None
    req = server.Request.from_fields(got)
    assert req.argv == ("setup", "/n") and req.stdin == stdin and req.umask == 0o022


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_reader_meets_garbage_with_refusal_only(chunks: list[bytes]) -> None:
    reader = server.RequestReader(limit=4096)
    try:
        for chunk in chunks:
            fields = reader.feed(chunk)
            if fields is not None:
                server.Request.from_fields(fields)
                break
    except server.Refused:
        pass  # the only way to say no; anything else would escape into the loop
    assert len(reader.buf) <= 4096 + 12 + 64


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=200), st.binary(min_size=1, max_size=8))
def test_reader_refuses_bit_flips_or_takes_them_as_data(at: int, junk: bytes) -> None:
    data = bytearray(_frame(["version"]))
    at %= len(data)
    data[at : at + len(junk)] = junk  # may also shorten or lengthen the frame
    reader = server.RequestReader()
    try:
        fields = reader.feed(bytes(data))
        if fields is not None:
            server.Request.from_fields(fields)
    except server.Refused:
        pass


def test_reader_refuses_early() -> None:
    with pytest.raises(server.Refused, match="magic"):
        server.RequestReader().feed(b"GET / HTTP/1.1\r\n")
    with pytest.raises(server.Refused, match="too large"):
        server.RequestReader(limit=100).feed(client.REQUEST_MAGIC + (101).to_bytes(4, "big"))
    with pytest.raises(server.Refused, match="after the request"):
        server.RequestReader().feed(_frame(["version"]) + b"x")
    reader = server.RequestReader()
    r, w = os.pipe()
    os.close(w)
    with pytest.raises(server.Refused, match="at most one fd"):
        reader.feed(b"", [r, os.dup(r)])
    reader.close()
    assert reader.fds == []
    with pytest.raises(server.Refused, match="fields"):
        server.Request.from_fields([b"a"])
    with pytest.raises(server.Refused, match="umask"):
        server.Request.from_fields([b"", b"", b"/", b"99", b""])


def test_settings_are_read_once_and_sane() -> None:
    assert server.Settings.from_env({}).idle == server.DEFAULT_IDLE
    assert server.Settings.from_env({"BURROW_ENGINE_IDLE": "2.5"}).idle == 2.5
    for bad in ("nan", "-1", "0", "x"):
        assert server.Settings.from_env({"BURROW_ENGINE_IDLE": bad}).idle == server.DEFAULT_IDLE
    s = client.Settings.from_env({"BURROW_ENGINE": "off", "BURROW_ENGINE_STATS": "1"})
    assert (s.engine_off, s.stats, s.reply_timeout) == (True, True, client.REPLY_TIMEOUT)
    assert client.Settings.from_env({"BURROW_ENGINE_TIMEOUT": "2"}).reply_timeout == 2.0
    for bad in ("nan", "-1", "0", "inf", "x"):
        timeout = client.Settings.from_env({"BURROW_ENGINE_TIMEOUT": bad}).reply_timeout
        assert timeout == client.REPLY_TIMEOUT, bad
    with pytest.raises(AttributeError):
        s.stats = False  # type: ignore[misc]


def test_sweep_removes_only_dead_engines_files(tmp_path: os.PathLike[str]) -> None:
    import fcntl

    d = str(tmp_path)
    names = ["engine-1-2.log", "engine-1-2.sock", "engine-3-4.log", "engine-3-4.sock",
             "engine-5-6.sock", "engine-7-8.log", "other.sock", "burrow-engine.log"]  # fmt: skip
    for name in names:
        open(os.path.join(d, name), "w").close()
    live = os.open(os.path.join(d, "engine-3-4.log"), os.O_RDONLY)
    fcntl.flock(live, fcntl.LOCK_EX)  # a running engine holds its log's lock
    try:
        removed = server.sweep_stale(d, os.path.join(d, "engine-7-8.log"))
    finally:
        os.close(live)
    # 1-2 died; 5-6 never got as far as its log; 3-4 runs; 7-8 is the sweeper itself.
    assert sorted(removed) == ["engine-1-2.log", "engine-1-2.sock", "engine-5-6.sock"]
    assert sorted(os.listdir(d)) == ["burrow-engine.log", "engine-3-4.log", "engine-3-4.sock",
                                     "engine-7-8.log", "other.sock"]  # fmt: skip
