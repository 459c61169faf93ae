"""`burrow-netavark`: the thin client Podman execs, which hands the request to a warm engine.

Why this file looks the way it does: Podman execs netavark once per container setup and
teardown, so interpreter start-up is on every call's critical path. Importing the engine
(pyroute2 alone is ~150 ms) per call cannot beat Netavark's native binary, so this module
imports nothing beyond what a `python -S` interpreter has already loaded plus the C modules
`posix` and `_socket` (~0.1 ms; `os` would cost ~1 ms and the `socket` wrapper ~2 ms: `os`
is imported only off the fast path), and forwards the request to a long-lived engine
(`netns.server`) over a unix socket. Anything unusual falls back to running the command
in-process through `netns.netavark_cli.run`: slower, never wrong.

Wire protocol (version 2), one request per connection:

1. client connects; the server checks the peer (same uid, same net/user/mnt namespaces) and
   writes an 8-byte hello: `HELLO_OK`, or `HELLO_WRONG_WORLD` (client falls back in-process).
   A peer with another uid is just disconnected. Nothing has run before the hello, so the
   client may safely fall back on any failure up to here.
2. client sends `REQUEST_MAGIC`, a u32 body length, and the body (a list of length-prefixed
   fields, see `encode_request`), with the opened container netns attached as SCM_RIGHTS to
   the first byte, for setup/teardown.
3. server replies with a u32 length and fields: exit code, stdout, stderr, engine info; or
   with a single field, a refusal (a malformed request, or one the engine will not run, such
   as a netns fd that is not a network namespace): nothing ran, so the client runs it itself.

Crashes: an engine that dies after the request was sent may have applied any prefix of it.
The client then runs the command in-process, and for `setup` first runs `teardown` of the
very same request: teardown is idempotent and works on partial state, so the setup that
follows starts from nothing and either succeeds (the state a clean setup makes) or fails and
rolls itself back (nothing of this container is left). The engine's per-config-dir lock is an
flock, which the kernel drops when the engine dies, so the in-process run is never blocked
by the dead engine. An engine that does not answer within the reply timeout is killed first
(through a pidfd taken after the hello) and then treated the same way.
"""

from __future__ import annotations

import posix
import sys

from netns import statefiles

# typing and collections.abc cost ~2-7 ms to import, more than everything else here: keep
# them for the type checker only (mypy treats a name TYPE_CHECKING as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from _socket import socket as _Sock
    from collections.abc import Mapping, Sequence

PROTOCOL = b"2"
HELLO_OK = b"burrow" + PROTOCOL + b"+"
HELLO_WRONG_WORLD = b"burrow" + PROTOCOL + b"W"
REQUEST_MAGIC = b"BRWREQ" + PROTOCOL + b"\n"
SOCKET_NAME = statefiles.ENGINE_SOCK

# Subcommands worth starting an engine for. Everything else (version, --help, usage errors)
# uses an engine that is already running, but never starts one.
ENGINE_COMMANDS = frozenset(("setup", "teardown", "update", "create", "firewall-reload"))
NETNS_COMMANDS = frozenset(("setup", "teardown"))
STDIN_COMMANDS = frozenset(("setup", "teardown", "create"))

# Must match netavark_cli._VALUE_OPTS (a unit test checks): the options that take a value.
VALUE_OPTS = frozenset((
    "-f", "--file", "-c", "--config", "-r", "--rootless", "-a", "--aardvark-binary",
    "--firewall-driver", "--log-level", "--plugin-directory",
))  # fmt: skip

# How long to wait for the engine's hello. The engine serves one request at a time, so a
# busy engine delays the hello; past this we stop queueing and run in-process instead.
HELLO_TIMEOUT = 5.0
# A reply that takes longer than this means a wedged engine: it is killed, and the call is run
# in-process like any other the engine died in (BURROW_ENGINE_TIMEOUT overrides it).
REPLY_TIMEOUT = 600.0
# sockaddr_un.sun_path is 108 bytes including the NUL.
_SUN_PATH_MAX = 107


class Peek:
    """What the client needs from argv, found without argparse or netavark_cli."""

    __slots__ = ("command", "config", "netns_index", "file")

    def __init__(
        self, command: str | None, config: str | None, netns_index: int | None, file: str | None
    ) -> None:
        self.command = command  # None: no (valid) subcommand, or --help/--version
        self.config = config
        self.netns_index = netns_index  # argv index of <NETNS_PATH> for setup/teardown
        self.file = file  # the -f/--file input, read instead of stdin

    def __repr__(self) -> str:
        return (f"Peek(command={self.command!r}, config={self.config!r}, "
                f"netns_index={self.netns_index!r}, file={self.file!r})")  # fmt: skip

    @property
    def has_file(self) -> bool:
        return self.file is not None

    @property
    def needs_stdin(self) -> bool:
        return self.command in STDIN_COMMANDS and not self.has_file


def peek(argv: Sequence[str]) -> Peek:
    """Mirror netavark_cli.parse_args just far enough to route the call.

    A usage error here yields command=None; the full parser (in the engine or in-process)
    then produces the real message, so the two never have to agree on error text.
    """
    opts: dict[str, str] = {}
    i = 0
    n = len(argv)
    while i < n:
        word = argv[i]
        if word in ("-h", "--help", "-V", "--version"):
            return Peek(None, opts.get("config"), None, opts.get("file"))
        if word.startswith("--") and "=" in word:
            key, value = word.split("=", 1)
            if key not in VALUE_OPTS:
                break
            opts[key.lstrip("-")] = value
        elif word in VALUE_OPTS:
            if i + 1 >= n:
                break
            opts[word.lstrip("-")] = argv[i + 1]
            i += 1
        elif word.startswith("-"):
            break
        else:
            rest = n - i - 1
            index = i + 1 if word in NETNS_COMMANDS and rest == 1 and argv[i + 1] else None
            return Peek(word, _opt(opts, "c", "config"), index, _opt(opts, "f", "file"))
        i += 1
    return Peek(None, _opt(opts, "c", "config"), None, None)


def _opt(opts: Mapping[str, str], short: str, long: str) -> str | None:
    # parse_args keeps the last occurrence of either spelling; so do we, close enough for
    # routing (the engine re-parses argv itself).
    return opts.get(long, opts.get(short))


def socket_path(config: str | None, env: Mapping[str, str]) -> str:
    """Where the engine for this "network world" (+ config dir) listens.

    With --config (Podman always passes it) the socket lives in that directory, so rootful
    and each rootless user get their own engine. Without it, the name carries the inodes of
    this process's net and user namespaces, so two worlds never share an engine by accident
    (the server still checks; this just avoids fighting over one path).
    """
    if config and _is_normal_absolute(config):
        return f"{config}/{SOCKET_NAME}"  # what the join below gives for such a path
    import os

    if config:
        return os.path.join(os.path.abspath(config), SOCKET_NAME)
    net = os.stat("/proc/self/ns/net").st_ino
    user = os.stat("/proc/self/ns/user").st_ino
    name = statefiles.engine_sock_for(net, user)
    euid = os.geteuid()
    if euid == 0:
        return f"/run/burrow/{name}"
    # The rootless state directory, by the one rule (RuntimeDirError, a ValueError: the
    # XDG_RUNTIME_DIR set is unusable, which the user is told, naming the fix). Imported only
    # here: Podman always passes --config, and its every exec of us pays for each import.
    from netns import rundir

    return f"{rundir.burrow_dir(env, euid)}/{name}"


def _is_normal_absolute(path: str) -> bool:
    """True if os.path.abspath(path) == path: absolute, no empty, "." or ".." component, no
    trailing slash (Podman's --config always is; checked without importing os)."""
    return path[:1] == "/" and all(part not in ("", ".", "..") for part in path[1:].split("/"))


def fsencode(text: str) -> bytes:
    """os.fsencode of a str, without importing os."""
    return text.encode(sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())


# --- framing --------------------------------------------------------------------------------


def pack_fields(fields: Sequence[bytes]) -> bytes:
    """u32 big-endian length + bytes, per field."""
    return b"".join(len(f).to_bytes(4, "big") + f for f in fields)


def unpack_fields(body: bytes) -> list[bytes]:
    fields: list[bytes] = []
    i = 0
    while i < len(body):
        if i + 4 > len(body):
            raise ValueError("truncated field header")
        size = int.from_bytes(body[i : i + 4], "big")
        i += 4
        if i + size > len(body):
            raise ValueError("truncated field")
        fields.append(body[i : i + size])
        i += size
    return fields


def encode_strings(items: Sequence[bytes]) -> bytes:
    """NUL-terminated list: argv and environ entries cannot contain NUL, so this is lossless."""
    return b"".join(item + b"\0" for item in items)


def decode_strings(data: bytes) -> list[bytes]:
    return data.split(b"\0")[:-1]


def encode_request(
    argv: Sequence[str], env: Mapping[bytes, bytes], stdin: bytes, cwd: bytes, umask: int
) -> bytes:
    body = pack_fields([
        encode_strings([fsencode(a) for a in argv]),
        encode_strings([k + b"=" + v for k, v in env.items()]),
        cwd,
        b"%o" % umask,
        stdin,
    ])  # fmt: skip
    return REQUEST_MAGIC + len(body).to_bytes(4, "big") + body


# --- talking to the engine -------------------------------------------------------------------


class Reply:
    """One command's result: exactly what netavark_cli.run returns, as bytes, plus who ran it."""

    __slots__ = ("code", "stdout", "stderr", "info")

    def __init__(self, code: int, stdout: bytes, stderr: bytes, info: str) -> None:
        self.code = code
        self.stdout = stdout
        self.stderr = stderr
        self.info = info


class Fallback(Exception):
    """The engine did not serve this request; `reason` says why (shown by BURROW_ENGINE_STATS).

    `spawn` is set when nothing is listening, so starting an engine would help. `maybe_ran`
    is set when the engine died (or hung up) after the whole request was sent: it may have
    applied part of it, so the in-process run must start by undoing that.
    """

    def __init__(self, reason: str, *, spawn: bool = False, maybe_ran: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.spawn = spawn
        self.maybe_ran = maybe_ran


def _recv_exact(sock: _Sock, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(min(size - len(buf), 1 << 20))
        if not chunk:
            raise EOFError(f"engine closed the connection after {len(buf)} of {size} bytes")
        buf += chunk
    return bytes(buf)


def _connect(path: str) -> _Sock:
    import _socket

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    sock.settimeout(HELLO_TIMEOUT)
    try:
        if len(fsencode(path)) <= _SUN_PATH_MAX:
            sock.connect(path)
        else:
            import os

            # Too long for sockaddr_un: reach it through an O_PATH fd of its directory.
            dfd = os.open(os.path.dirname(path), os.O_PATH | os.O_CLOEXEC)
            try:
                sock.connect(f"/proc/self/fd/{dfd}/{os.path.basename(path)}")
            finally:
                os.close(dfd)
    except BaseException:
        sock.close()
        raise
    return sock


def request_engine(
    path: str, argv: Sequence[str], stdin: bytes, netns_fd: int | None,
    reply_timeout: float = REPLY_TIMEOUT,
) -> Reply:  # fmt: skip
    """Run one request on the engine at `path`. Raises Fallback if it was not served."""
    try:
        sock = _connect(path)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        # Missing socket or a stale one (engine dead): worth starting an engine.
        raise Fallback(f"no-engine ({exc.strerror})", spawn=True) from None
    except OSError as exc:
        raise Fallback(f"unreachable ({exc.strerror or exc})") from None
    pidfd = -1
    try:
        pidfd = _pidfd(_hello(sock))
        umask = posix.umask(0o022)
        posix.umask(umask)
        # posix.environ is the bytes environment os.environb wraps (Linux: bytes keys).
        data = encode_request(argv, posix.environ, stdin, posix.getcwdb(), umask)
        sock.settimeout(reply_timeout)
        try:
            _send_request(sock, data, netns_fd)
        except OSError as exc:
            # The engine runs a request only once all of it has arrived: nothing ran.
            raise Fallback(f"send failed ({exc})") from None
        try:
            size = int.from_bytes(_recv_exact(sock, 4), "big")
            fields = unpack_fields(_recv_exact(sock, size))
        except TimeoutError:
            # Wedged (or stopped): end it, then treat it as any engine that died mid-request.
            if pidfd >= 0 and _kill(pidfd):
                raise Fallback(f"wedged (no answer in {reply_timeout:g} s; engine killed)",
                               maybe_ran=True) from None  # fmt: skip
            return Reply(
                1,
                b'{"error":"burrow engine did not answer within %d s (see %s)"}\n'
                % (reply_timeout, fsencode(statefiles.engine_log_for(path))),
                b"",
                "timeout",
            )
        except (EOFError, OSError, ValueError) as exc:
            # The engine died mid-request, having applied who knows what of it.
            raise Fallback(f"lost ({exc})", maybe_ran=True) from None
    finally:
        sock.close()
        if pidfd >= 0:
            posix.close(pidfd)
    if len(fields) == 1:  # a refusal: the engine ran nothing
        raise Fallback(f"refused-by-engine ({fields[0].decode('utf-8', 'replace')})")
    if len(fields) != 4:
        raise Fallback(f"lost (reply has {len(fields)} fields)", maybe_ran=True)
    code, out, err, info = fields
    return Reply(int(code), out, err, info.decode("ascii", "replace"))


def _hello(sock: _Sock) -> int:
    """Check the engine is ours and will serve us; returns its pid. Nothing has run yet."""
    import _socket

    # The engine must be ours: our env and netns fd must not reach another user.
    cred = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
    if int.from_bytes(cred[4:8], sys.byteorder) != posix.geteuid():
        raise Fallback("refused (engine has another uid)")
    try:
        hello = _recv_exact(sock, len(HELLO_OK))
    except (EOFError, OSError) as exc:
        # Closed before the hello: another uid, an engine shutting down, or too busy.
        raise Fallback(f"refused ({exc})") from None
    if hello == HELLO_WRONG_WORLD:
        raise Fallback("wrong-world")
    if hello != HELLO_OK:
        raise Fallback(f"protocol mismatch (hello {hello!r})")
    return int.from_bytes(cred[0:4], sys.byteorder)


def _pidfd(pid: int) -> int:
    """A handle on the engine that a recycled pid can never alias (-1 if unavailable).

    Taken after the hello: the engine is alive and is the socket's owner (SO_PEERCRED).
    """
    try:
        return posix.pidfd_open(pid)
    except (OSError, AttributeError):
        return -1


def _kill(pidfd: int) -> bool:
    """SIGKILL the engine and wait (bounded) until it is gone and its locks are released."""
    import select
    import signal

    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except OSError:
        return False
    return bool(select.select([pidfd], [], [], 10.0)[0])  # readable once it has exited


def _send_request(sock: _Sock, data: bytes, netns_fd: int | None) -> None:
    import _socket

    if netns_fd is None:
        sock.sendall(data)
        return
    fd_bytes = netns_fd.to_bytes(4, sys.byteorder)
    sent = sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fd_bytes)])
    if sent < len(data):
        sock.sendall(data[sent:])




def spawn_engine(sock_path: str) -> int:
    """Start a detached engine for `sock_path`; returns its pid. Only on the slow path."""
    import os
    import subprocess

    # Inherit the environment (the engine's own lookups, e.g. XDG_RUNTIME_DIR, must match
    # the caller's) minus what would make it impersonate a service or the caller's unit.
    drop = ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "BURROW_ENGINE")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    # Find netns/ through this file, not cwd: the engine runs from / and must load the same
    # code as this client even from a source tree.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = (
        "import sys; sys.path.insert(0, sys.argv.pop(1)); "
        "from netns.server import main; sys.exit(main())"
    )
    proc = subprocess.Popen(
        [sys.executable, "-P", "-c", code, root, "--socket", sock_path],
        stdin=subprocess.DEVNULL,
        # Never hand Podman's pipes to the engine: Podman waits for them to close.
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=True,
        start_new_session=True,  # no controlling tty, no signals aimed at our process group
        cwd="/",
        env=env,
    )
    return proc.pid


# --- entry point -----------------------------------------------------------------------------


def emit(out: bytes, err: bytes) -> None:
    # Same order as netavark_cli.main: stderr first, then the JSON line on stdout.
    if err:
        sys.stderr.buffer.write(err)
        sys.stderr.flush()
    if out:
        sys.stdout.buffer.write(out)
        sys.stdout.flush()


def run_in_process(argv: Sequence[str], stdin: bytes) -> Reply:
    if sys.flags.no_site:
        # The fast wrapper runs `python -S` (no site: ~2 ms less per call); the engine's
        # dependencies (pyroute2, ...) live in site-packages, so load site now.
        import site

        site.main()
    import os

    from netns import netavark_cli

    out, err, code = netavark_cli.run(argv, stdin, os.environ)
    return Reply(code, out.encode("utf-8", "surrogateescape"),
                 err.encode("utf-8", "surrogateescape"), "in-process")  # fmt: skip


class Settings:
    """What the client reads from the environment, once per call (no dataclasses: ~5 ms)."""

    __slots__ = ("engine_off", "stats", "reply_timeout")
    engine_off: bool
    stats: bool
    reply_timeout: float

    def __init__(self, *, engine_off: bool, stats: bool, reply_timeout: float = REPLY_TIMEOUT) -> None:
        object.__setattr__(self, "engine_off", engine_off)
        object.__setattr__(self, "stats", stats)
        object.__setattr__(self, "reply_timeout", reply_timeout)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Settings is frozen: cannot set {name}")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        return cls(
            engine_off=env.get("BURROW_ENGINE") == "off",  # always in-process (tests, debugging)
            stats=bool(env.get("BURROW_ENGINE_STATS")),  # say on stderr who served the call
            reply_timeout=_seconds(env.get("BURROW_ENGINE_TIMEOUT"), REPLY_TIMEOUT),
        )


def environ() -> dict[str, str]:
    """The environment as os.environ has it (decoded as os.fsdecode does), without os."""
    enc, errors = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
    return {k.decode(enc, errors): v.decode(enc, errors) for k, v in posix.environ.items()}


def _seconds(text: str | None, default: float) -> float:
    try:
        value = float(text) if text else default
    except ValueError:
        return default
    return value if 0 < value < 1e9 else default  # also refuses NaN


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    env = environ()
    settings = Settings.from_env(env)
    p = peek(args)
    if p.command == "firewalld-reload":  # a daemon of its own, never an engine request
        from netns import netavark_cli

        return netavark_cli.main(args)
    stdin = b""
    if p.needs_stdin and sys.stdin is not None:
        stdin = sys.stdin.buffer.read()

    reply: Reply | None = None
    maybe_ran = False
    if settings.engine_off:
        reason = "off"
    else:
        reply, reason, maybe_ran = _try_engine(p, args, stdin, env, settings.reply_timeout)
    served = reply is not None
    if reply is None and maybe_ran and p.command == "setup" and p.netns_index is not None:
        reply = recover_setup(args, p.netns_index - 1, stdin)
        reply.info = f"in-process reason={reason} recovered({reply.info})"
    elif reply is None:
        reply = run_in_process(args, stdin)
        reply.info = f"in-process reason={reason}"
    else:
        reply.info = f"engine {reply.info}"
    err = reply.stderr
    if settings.stats:
        err += b"burrow-engine: served-by=" + reply.info.encode() + b"\n"
    emit(reply.stdout, err)
    if argv is None and served and 0 <= reply.code <= 255:
        # This process is the program and the engine served it: nothing is left to finalize
        # (no thread, no file, no atexit hook; the output is flushed), and the interpreter's
        # teardown would cost each Podman call ~1 ms more. What sys.exit would exit with.
        posix._exit(reply.code)
    return reply.code


def recover_setup(args: Sequence[str], command_index: int, stdin: bytes) -> Reply:
    """Setup after an engine died holding it: undo whatever it applied, then set up afresh.

    Teardown of the same request removes exactly what this setup would make (this container's
    interfaces, its port rules and DNS entries, and bridges and network rules that nothing
    else uses), and tolerates any part of it being absent. Its errors are not the caller's
    answer: the setup that follows is, and a failed setup rolls back what it applied itself.
    """
    undo = list(args)
    undo[command_index] = "teardown"
    cleanup = run_in_process(undo, stdin)
    reply = run_in_process(args, stdin)
    reply.info = f"teardown-rc={cleanup.code}"
    return reply


def _try_engine(
    p: Peek, args: Sequence[str], stdin: bytes, env: Mapping[str, str], reply_timeout: float
) -> tuple[Reply | None, str, bool]:
    """(reply, "", False) if the engine served it; else (None, why not, whether it may have run)."""
    try:
        path = socket_path(p.config, env)
    except OSError as exc:
        return None, f"no-socket-path ({exc})", False
    except ValueError as exc:  # netns.rundir.RuntimeDirError: runs in-process; say the fix
        if p.command in ENGINE_COMMANDS:  # not for version/--help: netavark's are silent
            sys.stderr.write(f"burrow-netavark: {exc} (running without the warm engine)\n")
        return None, "no-socket-path (XDG_RUNTIME_DIR)", False
    netns_fd: int | None = None
    if p.netns_index is not None:
        try:
            # Open it here: /run/netns/... may be visible only in our mount namespace, and
            # /proc/self/... means us. O_NONBLOCK so a FIFO cannot wedge the client.
            flags = posix.O_RDONLY | posix.O_CLOEXEC | posix.O_NONBLOCK
            netns_fd = posix.open(args[p.netns_index], flags)
        except OSError:
            # Send the path as is: the engine shares our mount namespace (it checks), so
            # it fails to open it in exactly the way in-process would (teardown tolerates a
            # vanished netns; setup reports "invalid namespace path: ...").
            netns_fd = None
    try:
        return request_engine(path, args, stdin, netns_fd, reply_timeout), "", False
    except Fallback as fb:
        reason = fb.reason
        if fb.spawn and p.command in ENGINE_COMMANDS:
            try:
                spawn_engine(path)
                reason = "spawned"
            except OSError as exc:
                reason = f"spawn-failed ({exc})"
        return None, reason, fb.maybe_ran
    finally:
        if netns_fd is not None:
            posix.close(netns_fd)


if __name__ == "__main__":
    raise SystemExit(main())
