"""`burrow-dns [--config DIR] [-p|--port N] [--filter-search-domain D] run|version`.

Same flags and defaults as aardvark-dns, without its 1.4 start-up bugs (spec §2.1): the config
is parsed and every listener bound *before* forking, the parent exits 0 only once the daemon
has written its pid file and is serving, and exits 1 with the reason otherwise. Inherited fds
are closed first. Imports stay light (no asyncio, no logging): start-to-first-answer is
benchmarked.
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
import time
from collections.abc import Sequence

from netns import __version__, statefiles

PID_FILE = statefiles.AARDVARK_PID


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="burrow-dns", description="Container DNS server (aardvark-dns compatible)"
    )
    p.add_argument("-c", "--config", default="/dev/stdin", help="network config directory")
    p.add_argument("-p", "--port", type=_port, default=5533, help="port to listen on")
    p.add_argument("-f", "--filter-search-domain", default=".dns.podman",
                   help="search domain stripped from queries")
    p.add_argument("--log-file", help="daemon log file (default: stderr until daemonized)")
    p.add_argument("-V", "--version", action="version", version=f"burrow-dns {__version__}")
    p.add_argument("command", choices=["run", "version"])
    return p


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"port {port} out of range 1-65535")
    return port


class _Log:
    """One line per event, to stderr before daemonizing and to --log-file (if any) after."""

    def __init__(self) -> None:
        self.fd: int | None = 2

    def __call__(self, msg: str) -> None:
        if self.fd is None:
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        try:
            os.write(self.fd, f"{stamp} burrow-dns[{os.getpid()}]: {msg}\n".encode())
        except OSError:
            pass


def _remove_pid_file(path: str, only_if: int | None = None) -> None:
    try:
        if only_if is not None:
            with open(path) as f:
                if f.read().strip() != str(only_if):
                    return
        os.unlink(path)
    except OSError:
        pass


def run(config_dir: str, port: int, search_domain: str, log_file: str | None) -> int:
    os.closerange(3, 1 << 20)  # uses close_range(2): fds of whoever started us must not leak
    from netns.dns.resolver import Policy
    from netns.dns.server import Server, StartError

    log = _Log()
    config_dir = os.path.abspath(config_dir)  # the daemon leaves the cwd; reloads must still work
    pid_file = os.path.join(config_dir, PID_FILE)
    policy = Policy.make(search_domain, no_proxy=bool(os.environ.get("AARDVARK_NO_PROXY")))
    try:
        server = Server.prepare(config_dir, port, policy, log)
    except StartError as exc:
        print(f"burrow-dns: {exc}", file=sys.stderr)
        return 1
    if not server.listeners:
        # Nothing to serve: like aardvark, succeed without leaving a process behind.
        _remove_pid_file(pid_file)
        return 0

    log_fd = None
    if log_file:
        try:
            log_fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            print(f"burrow-dns: open log file {log_file}: {exc.strerror}", file=sys.stderr)
            return 1

    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid:
        os.close(w)
        answer = os.read(r, 4096)
        if answer[:1] == b"1":
            return 0
        reason = answer[1:].decode(errors="replace") or "daemon exited before it was ready"
        print(f"burrow-dns: error from child process: {reason}", file=sys.stderr)
        return 1

    os.close(r)
    try:
        os._exit(_daemon(server, pid_file, log, log_fd, w))
    except BaseException as exc:  # anything at all: tell the waiting parent, never hang it
        try:
            os.write(w, b"0" + str(exc).encode())
        finally:
            os._exit(1)


def _daemon(server: object, pid_file: str, log: _Log, log_fd: int | None, ready: int) -> int:
    from netns.dns.server import Server
    from netns.dns.upstream import DEFAULT_TIMEOUT, TIMEOUT_ENV
    from netns.loop import Loop

    assert isinstance(server, Server)
    os.setsid()
    os.chdir("/")  # do not pin whatever mount the caller stood in
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(log_fd if log_fd is not None else null, 2)
    os.close(null)
    log.fd = 2 if log_fd is not None else None

    me = os.getpid()
    with open(pid_file, "w") as f:
        f.write(str(me))  # no newline, like aardvark

    loop = Loop()
    server.start(loop, float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT)))

    def stop() -> None:
        loop.stop()

    def reload() -> None:
        server.reload()
        gc.freeze()

    server.on_empty = stop
    loop.on_signal(signal.SIGHUP, reload)
    loop.on_signal(signal.SIGTERM, stop)
    loop.on_signal(signal.SIGINT, stop)
    os.write(ready, b"1")
    os.close(ready)
    log(f"serving {', '.join(server.listeners)} port {server.port}")
    # The table is long-lived: keep it out of the cyclic GC's full passes (latency spikes).
    gc.freeze()
    loop.run()
    server.close()
    _remove_pid_file(pid_file, only_if=me)
    log("exiting")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "version":
        print(
            "{\n"
            f'  "version": "{__version__}",\n'
            '  "commit": "",\n'
            '  "build_time": "",\n'
            '  "target": "python"\n'
            "}"
        )
        return 0
    return run(args.config, args.port, args.filter_search_domain, args.log_file)


if __name__ == "__main__":
    sys.exit(main())
