"""The warm engine behind `burrow-netavark`: `python -m netns.server --socket PATH`.

One engine serves one user namespace and config dir, in whatever network namespace each
caller is in (it enters the caller's netns for the request). It imports the heavy engine
once, before it binds, so that the first request it accepts is already warm.

Serving: one epoll loop (netns.loop) accepts peers and reads their requests side by side, each
with a deadline and a size cap, so a peer that goes silent, trickles bytes or sends garbage
costs the others nothing. Complete requests run one at a time (the engine takes its own
locks; a queue of short requests is simpler and no slower than threads fighting over those
locks). A request the engine cannot parse, or will not run (a netns fd that is not a network
namespace, a FIFO where a file is read), gets a refusal and the client runs it in-process.

Security: the socket is mode 0600, every peer must have our euid (SO_PEERCRED), and the
client checks the same of us. A peer in another user namespace, or one whose view of the
state directory is not ours (another mount namespace with other files there), gets
HELLO_WRONG_WORLD and runs the command itself: uids, paths and state would mean something
else here.

Lifetime: started on demand by the client (detached, own session, stdio to the log file),
exits after BURROW_ENGINE_IDLE seconds (default 30) without a request, or as soon as its
socket path is removed or taken over by another engine. It removes only its own socket.
Engines started without `--config` keep their socket and log in a shared directory
(/run/burrow, $XDG_RUNTIME_DIR/burrow), one pair per network world: such an engine removes
its log too when it exits, and each one sweeps on start the files of engines that died
without doing so (a log nobody holds the lock of), so only live engines' files remain.

Crashes: a request is all-or-nothing across an engine crash because the client, which knows
what it sent, finishes or undoes it in-process (see netns.client). The engine's part is to
hold nothing that outlives it: its locks are flocks, dropped by the kernel at exit, and the
daemons it forks close every inherited fd first.

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
import gc
import importlib
import json
import logging
import os
import re
import signal
import socket
import stat
import struct
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TextIO

from netns import logs, statefiles
from netns.client import (
    HELLO_OK,
    HELLO_WRONG_WORLD,
    REQUEST_MAGIC,
    decode_strings,
    pack_fields,
    peek,
    unpack_fields,
)
from netns.loop import IN, Loop, Timer
from netns.nsenter import CLONE_NEWNET, setns
from netns.proctitle import set_title

log = logging.getLogger("netns.server")

DEFAULT_IDLE = 30.0
# Modules to load before binding. Missing ones are skipped: the engine is written in
# parallel, and a request that needs a missing module fails in `run` exactly as in-process.
PRELOAD = (
    "netns.netavark_cli", "netns.engine", "netns.netlink",
    # burrow-dns is started by forking the engine (netns/aardvark.py): have it warm too.
    "netns.dns.cli", "netns.dns.server", "netns.dns.resolver", "netns.loop", "netns.dns.upstream",
    # burrow-cni's calls (netns.cni.client) are served here too: ~50 ms to import on a first ADD.
    "netns.cni.plugin",
)
_PR_SET_CHILD_SUBREAPER = 36
_NS_GET_NSTYPE = 0xB703  # ioctl on a namespace fd: which kind of namespace it is
_NS_KINDS = ("net", "user", "mnt")
_HEAD = len(REQUEST_MAGIC) + 4
MAX_REQUEST = 8 << 20  # stdin is a few KB of JSON; refuse (client runs in-process) beyond
MAX_PEERS = 32  # peers reading a request at once; more are closed before the hello
MAX_BUFFERED = 32 << 20  # bytes of unfinished requests held across all peers
REQUEST_DEADLINE = 10.0  # from hello to the last byte: a silent or trickling peer is dropped
_REPLY_TIMEOUT = 10.0  # a reply is a few KB; a peer that will not read it is dropped
_TICK = 1.0  # notice a removed socket, reap daemons, check idleness
_UCRED = struct.Struct("3i")
_STALE = re.compile(statefiles.ENGINE_NAME_RE)

NsIds = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Settings:
    """The engine's environment, read once at start."""

    idle: float = DEFAULT_IDLE  # BURROW_ENGINE_IDLE: seconds without a request before exiting

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        try:
            idle = float(env.get("BURROW_ENGINE_IDLE", DEFAULT_IDLE))
        except ValueError:
            idle = DEFAULT_IDLE
        return cls(idle=idle if idle == idle and idle > 0 else DEFAULT_IDLE)  # no NaN, no <= 0


# --- requests: framing and checks (pure, apart from fstat/ioctl on what arrived) -------------


class Refused(Exception):
    """This request will not run here; the client runs it in-process (nothing has run)."""


@dataclass(frozen=True)
class Request:
    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: bytes
    umask: int
    stdin: bytes

    @classmethod
    def from_fields(cls, fields: Sequence[bytes]) -> Request:
        if len(fields) != 5:
            raise Refused(f"request has {len(fields)} fields, expected 5")
        argv, env, cwd, umask, stdin = fields
        try:
            mask = int(umask, 8)
        except ValueError:
            raise Refused(f"bad umask {umask[:16]!r}") from None
        if not 0 <= mask <= 0o777 or b"\0" in cwd:
            raise Refused("bad umask or cwd")
        return cls(
            argv=tuple(os.fsdecode(a) for a in decode_strings(argv)),
            env=dict(_env_item(item) for item in decode_strings(env)),
            cwd=cwd,
            umask=mask,
            stdin=stdin,
        )


class RequestReader:
    """One peer's request as it arrives: magic, u32 body length, body; at most one fd.

    Refuses as early as the bytes allow: a wrong magic at its first wrong byte, a size over
    the cap as soon as the length is in, a second fd or a byte past the body at once.
    """

    def __init__(self, limit: int = MAX_REQUEST) -> None:
        self.limit = limit
        self.buf = bytearray()
        self.fds: list[int] = []  # owned: close() them, or take them with take_fd()
        self.size: int | None = None

    def feed(self, data: bytes, fds: Sequence[int] = ()) -> list[bytes] | None:
        """Add what arrived; returns the request's fields once it is complete."""
        self.fds.extend(fds)
        if len(self.fds) > 1:
            raise Refused(f"expected at most one fd, got {len(self.fds)}")
        self.buf += data
        if self.size is None:
            seen = min(len(self.buf), len(REQUEST_MAGIC))
            if bytes(self.buf[:seen]) != REQUEST_MAGIC[:seen]:
                raise Refused("bad request magic (client of another protocol version?)")
            if len(self.buf) < _HEAD:
                return None
            self.size = int.from_bytes(self.buf[len(REQUEST_MAGIC) : _HEAD], "big")
            if self.size > self.limit:
                raise Refused(f"request of {self.size} bytes is too large")
        if len(self.buf) < _HEAD + self.size:
            return None
        if len(self.buf) > _HEAD + self.size:
            raise Refused("bytes after the request (one request per connection)")
        try:
            return unpack_fields(bytes(self.buf[_HEAD:]))
        except ValueError as exc:
            raise Refused(str(exc)) from None

    def take_fd(self) -> int | None:
        return self.fds.pop() if self.fds else None

    def close(self) -> None:
        while self.fds:
            os.close(self.fds.pop())


def check_inputs(req: Request, netns_fd: int | None) -> None:
    """Refuse what would make the engine block or act on the wrong object (runs in req.cwd).

    In-process, a FIFO given as the netns or the input file blocks only the caller; here it
    would block every peer, so such requests go back to the caller.
    """
    p = peek(req.argv)
    if p.netns_index is not None:
        if netns_fd is not None:
            if not is_netns(netns_fd):
                raise Refused("the fd sent is not a network namespace")
        else:
            _regular_or_missing(req.argv[p.netns_index], "netns path")
    if p.file is not None:
        _regular_or_missing(p.file, "input file")


def _regular_or_missing(path: str, what: str) -> None:
    try:
        st = os.stat(path)
    except OSError:
        return  # fails in the engine exactly as in-process
    if not stat.S_ISREG(st.st_mode):
        raise Refused(f"{what} is not a regular file")


def is_netns(fd: int) -> bool:
    try:
        return fcntl.ioctl(fd, _NS_GET_NSTYPE) == CLONE_NEWNET
    except OSError:
        return False


def refusal(reason: str) -> bytes:
    body = pack_fields([reason.encode("utf-8", "replace")])
    return len(body).to_bytes(4, "big") + body


def _env_item(item: bytes) -> tuple[str, str]:
    key, _, value = item.partition(b"=")
    return os.fsdecode(key), os.fsdecode(value)


# --- the engine ------------------------------------------------------------------------------


class Peer:
    """A connection that got the hello and is sending its request."""

    def __init__(self, conn: socket.socket, pid: int) -> None:
        self.conn = conn
        self.pid = pid
        self.reader = RequestReader()
        self.timer: Timer | None = None
        self.refused = False  # answered; what it still sends is read and dropped until EOF

    def receive(self) -> list[bytes] | None:
        """Read what is there; returns the fields once complete. EOFError on hang-up."""
        while True:
            if self.refused:
                self.discard()
                continue
            try:
                data, anc, _flags, _ = self.conn.recvmsg(
                    1 << 16, socket.CMSG_SPACE(4 * 4), socket.MSG_CMSG_CLOEXEC
                )
            except (BlockingIOError, InterruptedError):
                return None
            fds: list[int] = []
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    usable = len(payload) - len(payload) % 4
                    fds.extend(struct.unpack(f"{usable // 4}i", payload[:usable]))
            if not data and not fds:
                raise EOFError("peer hung up mid-request")
            fields = self.reader.feed(data, fds)
            if fields is not None:
                return fields

    def discard(self) -> None:
        """Read and drop input: closing with unread bytes would reset the connection, and the
        peer would lose the refusal it has not read yet."""
        try:
            if not self.conn.recv(1 << 16):
                raise EOFError("peer hung up after its refusal")
        except (BlockingIOError, InterruptedError):
            raise _Drained from None

    def refuse(self, frame: bytes) -> None:
        """Answer now, before the peer has sent all of its request."""
        self.refused = True
        self.reader.close()
        self.reader.buf.clear()
        self.conn.setblocking(True)
        self.conn.settimeout(_REPLY_TIMEOUT)
        try:
            self.conn.sendall(frame)
            self.conn.shutdown(socket.SHUT_WR)
        finally:
            self.conn.setblocking(False)

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.reader.close()
        self.conn.close()


class _Drained(Exception):
    """Nothing more to read from a refused peer for now."""


class Engine:
    """The listening socket, the peers, and the serving loop."""

    def __init__(self, sock_path: str, settings: Settings) -> None:
        self.sock_path = sock_path
        self.settings = settings
        self.world = ns_ids("self")
        self.served = 0
        self.stop_reason: str | None = None
        self.listener: socket.socket | None = None
        self.sock_id: tuple[int, int] | None = None
        self.loop = Loop()
        self.peers: dict[int, Peer] = {}
        self.last_request = time.monotonic()

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
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                sock.bind(tmp)
                sock.listen(64)
                os.rename(tmp, os.path.join(short, name))
                st = os.stat(os.path.join(short, name))
        except BaseException:
            sock.close()
            raise
        finally:
            os.umask(old_umask)
        sock.setblocking(False)
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
                log.warning("could not remove %s: %s", self.sock_path, exc)
        for peer in list(self.peers.values()):
            self.drop(peer)
        if self.listener is not None:
            self.listener.close()
            self.listener = None

    # --- the loop --------------------------------------------------------------------------

    def serve(self) -> str:
        assert self.listener is not None
        self.loop.add(self.listener.fileno(), self._on_listener)
        self.loop.call_later(_TICK, self._tick)
        self.last_request = time.monotonic()
        while self.stop_reason is None:
            try:
                self.loop.run()
            except Exception:  # a bug in handling one peer must not end the others' service
                log.exception("event loop")
        return self.stop_reason

    def stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self.loop.stop()

    def on_signal(self, signum: int, _frame: object) -> None:
        self.stop(f"signal {signal.Signals(signum).name}")

    def _tick(self) -> None:
        reap_children()
        if not self.socket_is_ours():
            self.stop("socket path removed or replaced")
        elif not self.peers and time.monotonic() - self.last_request >= self.settings.idle:
            self.stop(f"idle for {self.settings.idle:g} s")
        else:
            self.loop.call_later(_TICK, self._tick)

    @property
    def buffered(self) -> int:
        return sum(len(p.reader.buf) for p in self.peers.values())

    def _on_listener(self, _events: int) -> None:
        assert self.listener is not None
        while self.stop_reason is None:
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: the peer waits in the backlog
                log.warning("accept: %s", exc)
                return
            try:
                self.admit(conn)
            except Exception as exc:  # one broken peer must not take the engine down
                log.warning("peer dropped: %r", exc)
                conn.close()

    def admit(self, conn: socket.socket) -> None:
        pid, uid, _gid = _UCRED.unpack(
            conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        )
        if uid != os.geteuid():
            log.warning("refused pid %d: uid %d is not %d", pid, uid, os.geteuid())
            conn.close()  # the client falls back in-process
            return
        if len(self.peers) >= MAX_PEERS:
            log.warning("refused pid %d: %d peers already sending requests", pid, MAX_PEERS)
            conn.close()  # before the hello: nothing ran, the client runs it in-process
            return
        conn.setblocking(False)
        if pid <= 0 or not self.same_world(pid):
            log.info("pid %d is in another network world; told it to run in-process", pid)
            with contextlib.suppress(OSError):
                conn.send(HELLO_WRONG_WORLD)
            conn.close()
            return
        conn.send(HELLO_OK)  # 8 bytes into an empty socket buffer: never partial
        peer = Peer(conn, pid)
        self.peers[conn.fileno()] = peer
        peer.timer = self.loop.call_later(REQUEST_DEADLINE, lambda: self._expire(peer))
        self.loop.add(conn.fileno(), lambda _ev: self._on_peer(peer), IN)

    def _expire(self, peer: Peer) -> None:
        peer.timer = None
        log.warning("pid %d sent no complete request in %g s; dropped", peer.pid, REQUEST_DEADLINE)
        self.drop(peer)

    def drop(self, peer: Peer) -> None:
        self.peers.pop(peer.conn.fileno(), None)
        self.loop.remove(peer.conn.fileno())
        peer.close()

    def _on_peer(self, peer: Peer) -> None:
        try:
            fields = peer.receive()
            if fields is None and self.buffered > MAX_BUFFERED:
                raise Refused("too many bytes of unfinished requests across peers")
        except _Drained:
            return
        except Refused as exc:
            log.warning("pid %d: refused: %s", peer.pid, exc)
            try:
                peer.refuse(refusal(str(exc)))  # then wait (deadline still on) for its EOF
            except OSError:
                self.drop(peer)
            return
        except (EOFError, OSError) as exc:
            log.info("pid %d: %s", peer.pid, exc)
            self.drop(peer)
            return
        except Exception:  # a bug in reading one peer: drop that peer only
            log.exception("pid %d: dropped", peer.pid)
            self.drop(peer)
            return
        if fields is not None:
            self.run(peer, fields)

    def run(self, peer: Peer, fields: list[bytes]) -> None:
        """Execute a complete request (the loop waits: one request at a time) and reply."""
        self.loop.remove(peer.conn.fileno())
        netns_fd = peer.reader.take_fd()
        gc.disable()  # no collection on the caller's clock: after the reply instead
        try:
            reply = self.execute(Request.from_fields(fields), netns_fd, peer.pid)
        except Refused as exc:
            log.warning("pid %d: refused: %s", peer.pid, exc)
            reply = refusal(str(exc))
        except Exception as exc:  # one broken request must not take the engine down
            log.exception("request failed")
            reply = refusal(f"engine error: {exc!r}")
        finally:
            if netns_fd is not None:
                os.close(netns_fd)
        self.last_request = time.monotonic()
        self._reply(peer, reply)
        gc.enable()
        gc.collect()  # what the request left, while no caller waits (preload is frozen)
        if ns_ids("self") != self.world:
            # Engine code moved our main thread into another namespace and left it there:
            # every later request would run in the wrong world.
            self.stop("engine left its namespaces; refusing to serve from there")

    def _reply(self, peer: Peer, frame: bytes) -> None:
        try:
            peer.conn.settimeout(_REPLY_TIMEOUT)
            peer.conn.sendall(frame)
        except OSError as exc:
            log.info("pid %d: reply not delivered: %s", peer.pid, exc)
        self.drop(peer)

    def same_world(self, pid: int) -> bool:
        return same_world(self.sock_path, self.world, pid)

    def execute(self, req: Request, netns_fd: int | None, pid: int | None = None) -> bytes:
        self.served += 1
        return execute(req, netns_fd, pid, self.served)


def same_world(sock_path: str, world: NsIds, pid: int) -> bool:
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
    peer = peer_ns_ids(pid)
    if peer is None:
        return False
    if peer[1] != world[1]:  # user namespace: privileges and uids mean something else
        return False
    if peer[2] == world[2]:
        return True
    directory = os.path.dirname(os.path.abspath(sock_path))
    try:
        theirs = os.stat(f"/proc/{pid}/root{directory}")
        ours = os.stat(directory)
    except OSError:
        return False
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


def execute(req: Request, netns_fd: int | None, pid: int | None, served: int) -> bytes:
    """Run one request as the caller would in-process; returns the reply frame."""
    call_argv = list(req.argv)
    fd_path = original = None
    netns_ino = "-"
    index = peek(req.argv).netns_index
    if netns_fd is not None and index is not None:
        # The client opened the netns (it may be visible only there); the engine opens it
        # again through our fd table, for the duration of this call only.
        original = req.argv[index]
        fd_path = f"/proc/self/fd/{netns_fd}"
        call_argv[index] = fd_path
        netns_ino = str(os.fstat(netns_fd).st_ino)

    old_umask = os.umask(req.umask)
    try:
        try:
            os.chdir(req.cwd)
        except OSError:
            pass  # relative paths then fail as they would in a vanished cwd
        check_inputs(req, netns_fd if index is not None else None)
        with entered_netns(pid):
            out, err, code = run_command(call_argv, req.stdin, req.env)
    finally:
        os.umask(old_umask)
        os.chdir("/")

    if fd_path is not None and original is not None:
        out, err = _restore_path(out, err, fd_path, original)
    info = f"pid={os.getpid()} served={served} netns-ino={netns_ino}"
    body = pack_fields([
        str(code).encode(),
        out.encode("utf-8", "surrogateescape"),
        err.encode("utf-8", "surrogateescape"),
        info.encode(),
    ])  # fmt: skip
    return len(body).to_bytes(4, "big") + body


def run_command(argv: Sequence[str], stdin: bytes, env: Mapping[str, str]) -> tuple[str, str, int]:
    """netavark_cli.run, made total: the engine process must outlive any bug in a request."""
    from netns import netavark_cli

    try:
        if list(argv) == ["burrow-cni"]:  # a CNI call from burrow-cni's thin client
            from netns.cni.plugin import serve

            return serve(stdin, env)
        return netavark_cli.run(argv, stdin, env)
    except BaseException as exc:  # run() promises not to raise; a SystemExit still must not
        if isinstance(exc, KeyboardInterrupt):
            raise
        msg = json.dumps({"error": f"internal error: {exc!r}"}, separators=(",", ":"))
        return msg + "\n", "", 1


def _restore_path(out: str, err: str, fd_path: str, original: str) -> tuple[str, str]:
    """Show the caller's netns path, not our fd, in messages: output must match in-process."""
    pattern = re.compile(re.escape(fd_path) + r"(?!\d)")
    quoted = json.dumps(original)[1:-1]  # stdout is JSON
    return pattern.sub(lambda _m: quoted, out), pattern.sub(lambda _m: original, err)


# --- namespaces, processes ------------------------------------------------------------------


def ns_ids(pid: str) -> NsIds:
    return tuple(_ns_id(f"/proc/{pid}/ns/{kind}") for kind in _NS_KINDS)


def _ns_id(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


@contextlib.contextmanager
def entered_netns(pid: int | None) -> Iterator[None]:
    """Run the request in the caller's network namespace (its "host"), then come back.

    Everything the engine creates during the request (netlink and nftables sockets, sysctl
    files, a forked DNS server) then belongs to the caller's netns, exactly as if the caller
    had run the command itself. pid None: stay where we are.
    """
    if pid is None:
        yield
        return
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


def settle_memory() -> None:
    """The preloaded modules live as long as the engine: freeze them out of the collector,
    so a collection scans only what requests left (it cost ~2-4 ms per request under load).
    A forked child (burrow-dns) is a long-lived daemon of its own: collection back on."""
    gc.collect()
    gc.freeze()
    os.register_at_fork(after_in_child=gc.enable)


def preload() -> None:
    for name in PRELOAD:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            log.warning("preload %s: %s (requests needing it will fail as in-process)", name, exc)
            continue
        warm = getattr(module, "warmup", None)
        if callable(warm):  # an engine hook to pay lazy costs (netlink sockets, ...) now
            try:
                warm()
            except Exception as exc:
                log.warning("%s.warmup() failed: %r", name, exc)


# --- state files: the log doubles as the single-instance lock -------------------------------


log_path = statefiles.engine_log_for


def shared_dir(sock_path: str) -> bool:
    """An engine started without --config: its files sit beside other worlds' engines'."""
    return os.path.basename(sock_path) != statefiles.ENGINE_SOCK


def lock_log(sock_path: str) -> int | None:
    """Open and flock our log; None if a live engine holds it (then it serves this socket).

    A sweeping engine may unlink the file between our open and our flock: then we hold a lock
    on a file nobody else can find, so we check the path still names it and retry.
    """
    path = log_path(sock_path)
    for _ in range(5):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            raise
        try:
            st, now = os.fstat(fd), os.stat(path)
            if (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
    raise OSError(errno.EAGAIN, f"{path} keeps being replaced")


def sweep_stale(directory: str, own_log: str) -> list[str]:
    """Remove the socket and log of every engine in `directory` that is no longer running.

    An engine holds the flock on its log for its whole life, so a log we can lock is a dead
    engine's (SIGKILL, OOM, reboot of its netns); its socket only makes clients spawn again.
    """
    removed: list[str] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in sorted(n for n in names if _STALE.match(n) and n.endswith(statefiles.LOG_SUFFIX)):
        path = os.path.join(directory, name)
        if path == own_log:
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # a live engine
        try:
            for stale in (statefiles.engine_sock_for_log(path), path):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(stale)
                    removed.append(os.path.basename(stale))
        finally:
            os.close(fd)
    for name in names:  # a socket without a log: an engine that never got as far as its lock
        path = os.path.join(directory, name)
        orphan = name.endswith(statefiles.SOCK_SUFFIX) and not os.path.exists(log_path(path))
        if _STALE.match(name) and orphan:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                removed.append(name)
    return removed


# --- entry point ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[str, Settings]:
    parser = argparse.ArgumentParser(prog="python -m netns.server", description=__doc__)
    parser.add_argument("--socket", required=True, help="unix socket path to serve on")
    parser.add_argument(
        "--idle", type=float, default=None,
        help="exit after this many idle seconds (default: env BURROW_ENGINE_IDLE, else 30)",
    )  # fmt: skip
    opts = parser.parse_args(argv)
    settings = Settings.from_env(os.environ)
    if opts.idle is not None and opts.idle > 0:
        settings = Settings(idle=opts.idle)
    return os.path.abspath(opts.socket), settings


def open_log(sock_path: str) -> TextIO | None:
    """Take the single-instance lock; stdio and logging then go to the log file."""
    ensure_private_dir(os.path.dirname(sock_path), config_dir=not shared_dir(sock_path))
    # Clients racing to spawn engines start several; all but one leave here, before paying
    # for the imports.
    fd = lock_log(sock_path)
    if fd is None:
        return None
    os.ftruncate(fd, 0)
    stream = os.fdopen(fd, "a", buffering=1, closefd=True)
    # Tracebacks and stray prints from engine code land in the log, never in a pipe.
    os.dup2(fd, 1, inheritable=True)
    os.dup2(fd, 2, inheritable=True)
    return stream


def main(argv: Sequence[str] | None = None) -> int:
    sock_path, settings = parse_args(argv)
    try:
        stream = open_log(sock_path)
    except OSError as exc:
        print(f"burrow engine: {exc}", file=sys.stderr)
        return 1
    if stream is None:
        return 0  # another engine serves this socket
    directory = os.path.dirname(sock_path)
    set_title(f"burrow engine {directory}")
    logs.configure(f"burrow engine {directory}", stream=stream)
    if shared_dir(sock_path):
        removed = sweep_stale(directory, log_path(sock_path))
        if removed:
            log.info("removed files of engines that died: %s", " ".join(removed))
    engine = Engine(sock_path, settings)
    signal.signal(signal.SIGTERM, engine.on_signal)
    signal.signal(signal.SIGINT, engine.on_signal)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        set_child_subreaper()
    except OSError as exc:
        log.warning("%s; daemons' zombies are left to PID 1", exc)
    started = time.monotonic()
    preload()
    settle_memory()
    log.info("preloaded in %.0f ms", 1000 * (time.monotonic() - started))
    try:
        engine.bind()
    except OSError as exc:
        log.error("cannot listen on %s: %s", sock_path, exc)
        return 1
    log.info("serving %s (idle timeout %g s)", sock_path, settings.idle)
    try:
        reason = engine.serve()
    finally:
        engine.close()
    log.info("exiting after %d requests: %s", engine.served, reason)
    if shared_dir(sock_path):  # nobody will look for it, and the next engine would sweep it
        with contextlib.suppress(OSError):
            os.unlink(log_path(sock_path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
