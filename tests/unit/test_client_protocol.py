"""Client/engine framing, socket path rules and the client's import footprint."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

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


def test_socket_path_without_config_names_the_world(monkeypatch: pytest.MonkeyPatch) -> None:
    net = os.stat("/proc/self/ns/net").st_ino
    user = os.stat("/proc/self/ns/user").st_ino
    name = f"engine-{net}-{user}.sock"
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert client.socket_path(None, {"XDG_RUNTIME_DIR": "/run/user/0"}) == f"/run/burrow/{name}"
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert client.socket_path(None, {"XDG_RUNTIME_DIR": "/run/user/1000"}) == (
        f"/run/user/1000/burrow/{name}"
    )
    assert client.socket_path(None, {}) == f"/tmp/burrow-1000/{name}"
    assert client.socket_path(None, {"XDG_RUNTIME_DIR": "relative"}) == f"/tmp/burrow-1000/{name}"


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
