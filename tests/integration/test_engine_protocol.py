"""The warm engine's control socket under hostile peers: a real engine, real sockets, real fds.

Malformed frames, truncated headers, huge lengths, wrong fds and peers that hang up mid-request
must get a refusal or be dropped; the engine must not die, and must not make other peers wait
(the old engine read one peer at a time, 30 s per silent peer, so the next client gave up and
ran in-process). Each hypothesis example ends with a well-formed request on a new connection,
answered by the same engine process.

Requests run in the caller's network namespace, so the test thread stays inside a throwaway
one for the whole test: nothing a fuzzed request could do reaches this machine's network.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netns import client, nsenter, server
from tests.integration.test_warm_engine import call, gone, start_engine
from tests.nsutil import Netns

pytestmark = pytest.mark.root

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


@contextmanager
def inside(ns: Netns) -> Iterator[None]:
    """This thread (the process's main thread, whose netns the engine enters) in `ns`."""
    assert threading.current_thread() is threading.main_thread()
    fd = os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with nsenter.entered(fd):
            yield
    finally:
        os.close(fd)


class Engine:
    def __init__(self, ns: Netns, config: str) -> None:
        self.ns = ns
        self.config = config
        self.pid = start_engine(ns, config)
        self.path = os.path.join(config, client.SOCKET_NAME)

    def connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(15)
        sock.connect(self.path)
        assert sock.recv(8) == client.HELLO_OK
        return sock

    def exchange(self, data: bytes, fds: list[int] | None = None, *, hang_up: bool = True) -> bytes:
        """Send `data` (fds on its first byte), half-close, return all the engine answers."""
        with self.connect() as sock:
            if fds:
                sock.sendmsg([data[:1] or b"\0"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                                    struct.pack(f"{len(fds)}i", *fds))])  # fmt: skip
                data = data[1:]
            if data:
                sock.sendall(data)
            if hang_up:
                sock.shutdown(socket.SHUT_WR)
            out = b""
            while chunk := sock.recv(65536):
                out += chunk
            return out

    def healthy(self) -> None:
        """The same engine still answers a good request, correctly."""
        assert not gone(self.pid), "the engine died"
        reply = self.exchange(client.encode_request(["version"], {}, b"", b"/", 0o022))
        fields = client.unpack_fields(reply[4:])
        assert len(fields) == 4 and fields[0] == b"0" and b'"version"' in fields[1], reply
        assert f"pid={self.pid} ".encode() in fields[3]


def check_answer(reply: bytes) -> None:
    """Nothing (dropped), or one well-formed frame: a refusal or a full reply."""
    if not reply:
        return
    size = int.from_bytes(reply[:4], "big")
    assert len(reply) == 4 + size, reply[:64]
    assert len(client.unpack_fields(reply[4:])) in (1, 4)


@pytest.fixture
def engine(host_ns: Netns, tmp_path: os.PathLike[str]) -> Iterator[Engine]:
    config = os.path.join(str(tmp_path), "cfg")
    os.mkdir(config)
    with inside(host_ns):
        eng = Engine(host_ns, config)
        yield eng
        eng.healthy()


def _valid(argv: list[str], stdin: bytes = b"{}") -> bytes:
    return client.encode_request(argv, {b"PATH": b"/usr/bin:/bin"}, stdin, b"/", 0o022)


@FUZZ
@given(data=st.binary(max_size=2048))
def test_random_bytes(engine: Engine, data: bytes) -> None:
    check_answer(engine.exchange(data))
    engine.healthy()


@FUZZ
@given(cut=st.integers(min_value=0, max_value=400), flip=st.binary(max_size=6),
       at=st.integers(min_value=0, max_value=400))  # fmt: skip
def test_truncated_and_corrupted_frames(engine: Engine, cut: int, flip: bytes, at: int) -> None:
    frame = bytearray(_valid(["version"]))
    at %= len(frame)
    frame[at : at + len(flip)] = flip
    check_answer(engine.exchange(bytes(frame[: max(0, len(frame) - cut)])))
    engine.healthy()


@FUZZ
@given(size=st.integers(min_value=0, max_value=(1 << 32) - 1), extra=st.binary(max_size=64))
def test_any_length_header(engine: Engine, size: int, extra: bytes) -> None:
    reply = engine.exchange(client.REQUEST_MAGIC + size.to_bytes(4, "big") + extra)
    check_answer(reply)
    if size > server.MAX_REQUEST:  # refused as soon as the length is in, not after 4 GiB
        assert len(client.unpack_fields(reply[4:])) == 1, reply
    engine.healthy()


FD_KINDS = ("pipe", "devnull", "socket", "netns", "dir")


def _make_fd(kind: str, ns: Netns) -> int:
    if kind == "pipe":
        r, w = os.pipe()
        os.close(w)
        return r
    if kind == "devnull":
        return os.open(os.devnull, os.O_RDONLY)
    if kind == "socket":
        return socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).detach()
    if kind == "netns":
        return os.open(ns.path, os.O_RDONLY)
    return os.open("/", os.O_RDONLY)


@FUZZ
@given(kinds=st.lists(st.sampled_from(FD_KINDS), min_size=1, max_size=4),
       command=st.sampled_from(["setup", "teardown", "version"]))  # fmt: skip
def test_wrong_fds(engine: Engine, kinds: list[str], command: str) -> None:
    fds = [_make_fd(k, engine.ns) for k in kinds]
    try:
        # `{}` fails validation before anything changes, when it runs at all.
        argv = [command, "/nonexistent/netns"] if command != "version" else [command]
        reply = engine.exchange(_valid(argv), fds)
    finally:
        for fd in fds:
            os.close(fd)
    check_answer(reply)
    fields = client.unpack_fields(reply[4:])
    if len(fds) > 1:
        assert fields == [b"expected at most one fd, got %d" % len(fds)]
    elif command != "version" and kinds[0] != "netns":
        assert fields == [b"the fd sent is not a network namespace"]
    else:
        assert len(fields) == 4
    engine.healthy()


def test_a_fifo_never_blocks_the_engine(engine: Engine, tmp_path: os.PathLike[str]) -> None:
    """A FIFO as the netns or input file would block any open(); it goes back to the caller."""
    fifo = os.path.join(str(tmp_path), "fifo")
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # what the client sends for such a path
    try:
        reply = engine.exchange(_valid(["setup", fifo]), [fd])
    finally:
        os.close(fd)
    assert client.unpack_fields(reply[4:]) == [b"the fd sent is not a network namespace"]
    reply = engine.exchange(_valid(["setup", fifo]))  # the client could not open it: no fd
    assert client.unpack_fields(reply[4:]) == [b"netns path is not a regular file"]
    reply = engine.exchange(_valid(["-f", fifo, "setup", "/nonexistent/netns"]))
    assert client.unpack_fields(reply[4:]) == [b"input file is not a regular file"]
    # And through the real client: the refusal sends the call back in-process, which fails
    # the same way it always did for a missing netns.
    res = call(engine.ns, engine.config, "-f", "/dev/null", "setup", "/nonexistent/netns")
    assert res.served_by.startswith("in-process reason=refused-by-engine (input file"), res.served_by


def test_silent_and_half_done_peers_do_not_hold_up_others(engine: Engine) -> None:
    frame = _valid(["version"])
    stalled = []
    for part in (b"", frame[:3], frame[:20], frame[:-1]):  # silent, in the header, in the body
        sock = engine.connect()
        sock.sendall(part)
        stalled.append(sock)
    try:
        for _ in range(3):
            # Served by the engine (not "in-process reason=refused (timed out)" after 5 s).
            res = call(engine.ns, engine.config, "version")
            assert res.warm and res.engine_pid == engine.pid, res.served_by
    finally:
        for sock in stalled:
            sock.close()


def test_peers_over_the_cap_are_sent_in_process_not_queued(engine: Engine) -> None:
    stalled = [engine.connect() for _ in range(server.MAX_PEERS)]
    try:
        res = call(engine.ns, engine.config, "version")
        assert res.served_by.startswith("in-process reason=refused"), res.served_by
        assert res.code == 0
    finally:
        for sock in stalled:
            sock.close()
    engine.healthy()
