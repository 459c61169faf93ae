"""The warm engine behind `burrow-netavark`: `python -m netns.server --socket PATH`.

One engine serves one user namespace and config dir, in whatever network namespace each
caller is in (it enters the caller's netns for the request). It
imports the heavy engine once, before it binds, so that the first request it accepts is
already warm, then serves requests one at a time (the engine takes its own locks; a queue of
short requests is simpler and no slower than threads fighting over those locks).

Security: the socket is mode 0600, every peer must have our euid (SO_PEERCRED), and the
client checks the same of us. A peer in another user namespace, or one whose view of the
state directory is not ours (another mount namespace with other files there), gets
HELLO_WRONG_WORLD and runs the command itself: uids, paths and state would mean something
else here.

Lifetime: started on demand by the client (detached, own session, stdio to the log file),
exits after BURROW_ENGINE_IDLE seconds (default 30) without a request, or as soon as its
socket path is removed or taken over by another engine. It removes only its own socket.

Child processes: the engine is a child subreaper, so a daemon that double-forks while the
engine runs (aardvark-dns, burrow-dns) is re-parented to the engine, which reaps it when it
exits, instead of to a PID 1 that may never reap (a container's `sleep`). Such daemons must
outlive the engine, and they do: the engine never kills or signals them, they hold no pipe to
it (engine stdio is a log file) and no PR_SET_PDEATHSIG is set, so when the engine exits the
kernel re-parents them to the next subreaper up the tree, or PID 1 — the same as under
Netavark, whose process is always gone by then. Zombies are reaped only between requests, so
a `subprocess.run` inside a request still gets its own child's status.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import fcntl
import importlib
import json
import os
import re
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from types import FrameType
from typing import TextIO

from netns import statefiles
from netns.client import (
    HELLO_OK,
    HELLO_WRONG_WORLD,
    REQUEST_MAGIC,
    decode_strings,
    pack_fields,
    peek,
    unpack_fields,
)
from netns.nsenter import setns

DEFAULT_IDLE = 30.0
# Modules to load before binding. Missing ones are skipped: the engine is written in
# parallel, and a request that needs a missing module fails in `run` exactly as in-process.
PRELOAD = (
    "netns.netavark_cli", "netns.engine", "netns.netlink",
    # burrow-dns is started by forking the engine (netns/aardvark.py): have it warm too.
    "netns.dns.cli", "netns.dns.server", "netns.dns.resolver", "netns.loop", "netns.dns.upstream",
)
_PR_SET_CHILD_SUBREAPER = 36
_NS_KINDS = ("net", "user", "mnt")
_MAX_REQUEST = 64 << 20  # stdin is a few KB of JSON; refuse anything absurd
_REQUEST_TIMEOUT = 30.0  # a client that connects and goes silent must not block the queue
_UCRED = struct.Struct("3i")

NsIds = tuple[tuple[int, int], ...]


class Engine:
    """The listening socket and the serving loop."""

    def __init__(self, sock_path: str, idle: float, log: TextIO) -> None:
        self.sock_path = sock_path
        self.idle = idle
        self.log = log
        self.world = ns_ids("self")
        self.served = 0
        self.stop_reason: str | None = None
        self.listener: socket.socket | None = None
        self.sock_id: tuple[int, int] | None = None

    def say(self, message: str) -> None:
        self.log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} [{os.getpid()}] {message}\n")
        self.log.flush()

    # --- socket lifecycle ------------------------------------------------------------------

    def bind(self) -> None:
        """Bind under a temporary name and rename into place.

        rename() replaces a stale socket atomically, so clients never see the path missing
        (they would spawn yet another engine) nor hit a half-set-up socket.
        """
        directory, name = os.path.split(self.sock_path)
        tmp_name = f".{name}.{os.getpid()}.tmp"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old_umask = os.umask(0o177)  # the socket file is born 0600
        try:
            with _short_dir(directory) as short:
                tmp = os.path.join(short, tmp_name)
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
                sock.bind(tmp)
                sock.listen(64)
                os.rename(tmp, os.path.join(short, name))
                st = os.stat(os.path.join(short, name))
        except BaseException:
            sock.close()
            raise
        finally:
            os.umask(old_umask)
        self.listener = sock
        self.sock_id = (st.st_dev, st.st_ino)

    def socket_is_ours(self) -> bool:
        try:
            st = os.stat(self.sock_path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self.sock_id

    def close(self) -> None:
        # Unlink first, so new clients spawn a fresh engine instead of queueing on a socket
        # about to close; ones already queued read EOF before the hello and run in-process.
        if self.socket_is_ours():
            try:
                os.unlink(self.sock_path)
            except OSError as exc:
                self.say(f"could not remove {self.sock_path}: {exc}")
        if self.listener is not None:
            self.listener.close()
            self.listener = None

    # --- main loop -------------------------------------------------------------------------

    def serve(self) -> str:
        assert self.listener is not None
        last = time.monotonic()
        while self.stop_reason is None:
            reap_children()
            if not self.socket_is_ours():
                return "socket path removed or replaced"
            remaining = last + self.idle - time.monotonic()
            if remaining <= 0:
                return f"idle for {self.idle:g} s"
            # Wake at least once a second to notice a removed socket and reap daemons.
            ready, _, _ = select.select([self.listener], [], [], min(remaining, 1.0))
            if not ready:
                continue
            try:
                conn, _ = self.listener.accept()
            except OSError as exc:
                self.say(f"accept: {exc}")
                continue
            with conn:
                try:
                    self.handle(conn)
                except Exception as exc:  # one broken client must not take the engine down
                    self.say(f"request failed: {exc!r}")
            last = time.monotonic()
            if ns_ids("self") != self.world:
                # Engine code moved our main thread into another namespace and left it
                # there: every later request would run in the wrong world.
                return "engine left its namespaces; refusing to serve from there"
        return self.stop_reason

    def handle(self, conn: socket.socket) -> None:
        conn.settimeout(_REQUEST_TIMEOUT)
        pid, uid, _gid = _UCRED.unpack(
            conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        )
        if uid != os.geteuid():
            self.say(f"refused pid {pid}: uid {uid} is not {os.geteuid()}")
            return  # just close: the client falls back in-process
        if pid <= 0 or not self.same_world(pid):
            self.say(f"pid {pid} is in another network world; told it to run in-process")
            conn.sendall(HELLO_WRONG_WORLD)
            return
        conn.sendall(HELLO_OK)

        fields, fds = read_request(conn)
        try:
            with entered_netns(pid):
                reply = self.execute(fields, fds[0] if fds else None)
        finally:
            for fd in fds:
                os.close(fd)
        conn.settimeout(_REQUEST_TIMEOUT)
        conn.sendall(len(reply).to_bytes(4, "big") + reply)

    def same_world(self, pid: int) -> bool:
        """Same user namespace, and the same files where it matters; any network namespace.

        - The network namespace may differ: the engine enters the caller's for the request
          (`entered_netns`). Rootless Podman makes a new rootless netns whenever its last
          container has gone; an engine per netns would be cold for every such `run --rm`.
        - The mount namespace may differ too: rootless Podman runs every netavark call in a
          fresh one, all set up alike. What the engine must share with the caller is the
          state directory: the one holding our socket, which the caller just reached by path.
          So it is accepted when that directory, seen from the caller's root, is the very
          same directory (device and inode) as ours.
        """
        peer, world = peer_ns_ids(pid), self.world
        if peer is None or world is None:
            return False
        if peer[1] != world[1]:  # user namespace: privileges and uids mean something else
            return False
        if peer[2] == world[2]:
            return True
        directory = os.path.dirname(os.path.abspath(self.sock_path))
        try:
            theirs = os.stat(f"/proc/{pid}/root{directory}")
            ours = os.stat(directory)
        except OSError:
            return False
        return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)

    def execute(self, fields: list[bytes], netns_fd: int | None) -> bytes:
        if len(fields) < 5:
            raise ValueError(f"request has {len(fields)} fields, expected 5")
        argv = [os.fsdecode(a) for a in decode_strings(fields[0])]
        env = dict(_env_item(item) for item in decode_strings(fields[1]))
        cwd, umask, stdin = fields[2], int(fields[3], 8), fields[4]

        call_argv = list(argv)
        fd_path = original = None
        netns_ino = "-"
        index = peek(argv).netns_index
        if netns_fd is not None and index is not None:
            # The client opened the netns (it may be visible only there); the engine opens it
            # again through our fd table, for the duration of this call only.
            original = argv[index]
            fd_path = f"/proc/self/fd/{netns_fd}"
            call_argv[index] = fd_path
            netns_ino = str(os.fstat(netns_fd).st_ino)

        old_umask = os.umask(umask)
        try:
            try:
                os.chdir(cwd)
            except OSError:
                pass  # relative paths then fail as they would in a vanished cwd
            out, err, code = run_command(call_argv, stdin, env)
        finally:
            os.umask(old_umask)
            os.chdir("/")
        self.served += 1

        if fd_path is not None and original is not None:
            out, err = _restore_path(out, err, fd_path, original)
        info = f"pid={os.getpid()} served={self.served} netns-ino={netns_ino}"
        return pack_fields([
            str(code).encode(),
            out.encode("utf-8", "surrogateescape"),
            err.encode("utf-8", "surrogateescape"),
            info.encode(),
        ])  # fmt: skip

    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stop_reason = f"signal {signal.Signals(signum).name}"


def run_command(argv: Sequence[str], stdin: bytes, env: Mapping[str, str]) -> tuple[str, str, int]:
    """netavark_cli.run, made total: the engine process must outlive any bug in a request."""
    from netns import netavark_cli

    try:
        return netavark_cli.run(argv, stdin, env)
    except BaseException as exc:  # run() promises not to raise; a SystemExit still must not
        if isinstance(exc, KeyboardInterrupt):
            raise
        msg = json.dumps({"error": f"internal error: {exc!r}"}, separators=(",", ":"))
        return msg + "\n", "", 1


def _env_item(item: bytes) -> tuple[str, str]:
    key, _, value = item.partition(b"=")
    return os.fsdecode(key), os.fsdecode(value)


def _restore_path(out: str, err: str, fd_path: str, original: str) -> tuple[str, str]:
    """Show the caller's netns path, not our fd, in messages: output must match in-process."""
    pattern = re.compile(re.escape(fd_path) + r"(?!\d)")
    quoted = json.dumps(original)[1:-1]  # stdout is JSON
    return pattern.sub(lambda _m: quoted, out), pattern.sub(lambda _m: original, err)


def read_request(conn: socket.socket) -> tuple[list[bytes], list[int]]:
    """Read one request; returns its fields and any fds that came with it (close them)."""
    fds: list[int] = []
    head = len(REQUEST_MAGIC) + 4
    try:
        data, ancdata, _flags, _addr = conn.recvmsg(
            65536, socket.CMSG_SPACE(4 * 4), socket.MSG_CMSG_CLOEXEC
        )
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                usable = len(payload) - len(payload) % 4
                fds.extend(struct.unpack(f"{usable // 4}i", payload[:usable]))
        buf = bytearray(data)
        while len(buf) < head:
            buf += _recv_some(conn)
        if bytes(buf[: len(REQUEST_MAGIC)]) != REQUEST_MAGIC:
            raise ValueError("bad request magic (client of another protocol version?)")
        size = int.from_bytes(buf[len(REQUEST_MAGIC) : head], "big")
        if size > _MAX_REQUEST:
            raise ValueError(f"request of {size} bytes is too large")
        while len(buf) < head + size:
            buf += _recv_some(conn)
        if len(fds) > 1:
            raise ValueError(f"expected at most one fd, got {len(fds)}")
        return unpack_fields(bytes(buf[head : head + size])), fds
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def _recv_some(conn: socket.socket) -> bytes:
    chunk = conn.recv(1 << 20)
    if not chunk:
        raise EOFError("client closed the connection mid-request")
    return chunk


# --- namespaces, processes ------------------------------------------------------------------


def ns_ids(pid: str) -> NsIds:
    return tuple(_ns_id(f"/proc/{pid}/ns/{kind}") for kind in _NS_KINDS)


def _ns_id(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


@contextlib.contextmanager
def entered_netns(pid: int) -> Iterator[None]:
    """Run the request in the caller's network namespace (its "host"), then come back.

    Everything the engine creates during the request (netlink and nftables sockets, sysctl
    files, a forked DNS server) then belongs to the caller's netns, exactly as if the caller
    had run the command itself.
    """
    here = os.stat("/proc/thread-self/ns/net")
    there = os.stat(f"/proc/{pid}/ns/net")
    if (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino):
        yield
        return
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(target)
        try:
            yield
        finally:
            setns(home)
    finally:
        os.close(target)
        os.close(home)


def peer_ns_ids(pid: int) -> NsIds | None:
    """The peer's namespaces, or None if we cannot see them (then it is not our world)."""
    try:
        return ns_ids(str(pid))
    except OSError:
        return None


def reap_children() -> None:
    """Reap exited children, including daemons re-parented to us as subreaper."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def set_child_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


class _short_dir:
    """A name for `directory` short enough for sockaddr_un (108 bytes): /proc/self/fd/N."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.fd: int | None = None

    def __enter__(self) -> str:
        if len(os.fsencode(self.directory)) < 80:
            return self.directory
        self.fd = os.open(self.directory, os.O_PATH | os.O_CLOEXEC)
        return f"/proc/self/fd/{self.fd}"

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)


def ensure_private_dir(directory: str, *, config_dir: bool) -> None:
    """Create the socket directory; refuse one that someone else could tamper with."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    st = os.stat(directory)
    if st.st_uid != os.geteuid():
        raise PermissionError(f"{directory} belongs to uid {st.st_uid}, not {os.geteuid()}")
    # Podman's config dir may well be 0755; our own dirs (/tmp/burrow-UID) must not be
    # writable by others, or they could swap the socket.
    if not config_dir and st.st_mode & 0o022:
        raise PermissionError(f"{directory} is writable by group or others")


def preload(engine: Engine | None = None) -> None:
    for name in PRELOAD:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            if engine:
                engine.say(f"preload {name}: {exc} (requests needing it will fail as in-process)")
            continue
        warm = getattr(module, "warmup", None)
        if callable(warm):  # an engine hook to pay lazy costs (netlink sockets, ...) now
            try:
                warm()
            except Exception as exc:
                if engine:
                    engine.say(f"{name}.warmup() failed: {exc!r}")


# --- entry point ---------------------------------------------------------------------------


def log_path(sock_path: str) -> str:
    base = sock_path[:-5] if sock_path.endswith(".sock") else sock_path
    return base + ".log"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m netns.server", description=__doc__)
    parser.add_argument("--socket", required=True, help="unix socket path to serve on")
    parser.add_argument(
        "--idle", type=float, default=None,
        help="exit after this many idle seconds (default: env BURROW_ENGINE_IDLE, else 30)",
    )  # fmt: skip
    opts = parser.parse_args(argv)
    sock_path = os.path.abspath(opts.socket)
    idle = opts.idle
    if idle is None:
        try:
            idle = float(os.environ.get("BURROW_ENGINE_IDLE", DEFAULT_IDLE))
        except ValueError:
            idle = DEFAULT_IDLE

    directory = os.path.dirname(sock_path)
    try:
        ensure_private_dir(
            directory, config_dir=os.path.basename(sock_path) == statefiles.ENGINE_SOCK
        )
    except OSError as exc:
        print(f"burrow engine: {exc}", file=sys.stderr)
        return 1

    # The log doubles as the single-instance lock: clients racing to spawn engines start
    # several; all but one leave here, before paying for the imports.
    fd = os.open(log_path(sock_path), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return 0
        raise
    os.ftruncate(fd, 0)
    log = os.fdopen(fd, "a", buffering=1, closefd=True)
    # Tracebacks and stray prints from engine code land in the log, never in a pipe.
    os.dup2(fd, 1, inheritable=True)
    os.dup2(fd, 2, inheritable=True)

    engine = Engine(sock_path, idle, log)
    signal.signal(signal.SIGTERM, engine.on_signal)
    signal.signal(signal.SIGINT, engine.on_signal)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        set_child_subreaper()
    except OSError as exc:
        engine.say(f"{exc}; daemons' zombies are left to PID 1")
    started = time.monotonic()
    preload(engine)
    engine.say(f"preloaded in {1000 * (time.monotonic() - started):.0f} ms")
    try:
        engine.bind()
    except OSError as exc:
        engine.say(f"cannot listen on {sock_path}: {exc}")
        return 1
    engine.say(f"serving {sock_path} (idle timeout {idle:g} s)")
    try:
        reason = engine.serve()
    finally:
        engine.close()
    engine.say(f"exiting after {engine.served} requests: {reason}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
