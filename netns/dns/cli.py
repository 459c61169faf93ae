"""`burrow-dns [--config DIR] [-p|--port N] [--filter-search-domain D] run|version`.

Same flags and defaults as aardvark-dns, without its 1.4 start-up bugs (spec §2.1): the config
is parsed and every listener bound *before* forking, the parent exits 0 only once the daemon
has written its pid file and is serving, and exits 1 with the reason otherwise. Inherited fds
are closed first. Imports stay light (no asyncio): start-to-first-answer is benchmarked.

Logging is stdlib logging (`netns.logs.configure`) to stderr: the caller's before we daemonize,
then --log-file (or /dev/null); the level is RUST_LOG's, as for aardvark (default info). The process
title is `burrow-dns --config DIR -p PORT run` also when the warm engine forks us
(netns/aardvark.py calls `main()` in its fork), so `ps` never shows a hung-looking setup.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import resource
import signal
import sys
from collections.abc import Sequence

from netns import __version__, logs, proctitle, statefiles

log = logging.getLogger("netns.dns")

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


def _writable(log_file: str) -> bool:
    try:
        os.close(os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644))
    except OSError as exc:
        print(f"burrow-dns: open log file {log_file}: {exc.strerror}", file=sys.stderr)
        return False
    return True


def _raise_fd_limit() -> None:
    """Every TCP client, TCP upstream and UDP upstream socket costs an fd; the caps on them
    (limits.Limits: tcp_total, tcp_upstream_total, udp_sockets_total) assume the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError):
            pass


def run(config_dir: str, port: int, search_domain: str, log_file: str | None) -> int:
    os.closerange(3, 1 << 20)  # uses close_range(2): fds of whoever started us must not leak
    from netns.dns.limits import LimitError, Limits
    from netns.dns.resolver import Policy
    from netns.dns.server import Server, StartError

    config_dir = os.path.abspath(config_dir)  # the daemon leaves the cwd; reloads must still work
    proctitle.set_title(f"burrow-dns --config {config_dir} -p {port} run")
    logs.reset()  # forked from the warm engine: its handlers (and their fds) are not ours
    # To stderr: the caller's until we daemonize (it shows why a start failed, and which
    # config files were skipped), then the --log-file, which _detach puts on fd 2.
    logs.configure("burrow-dns", level=logs.parse_level(os.environ.get("RUST_LOG")) or logging.INFO,
                   stream=sys.stderr)
    pid_file = os.path.join(config_dir, PID_FILE)
    policy = Policy.make(search_domain, no_proxy=bool(os.environ.get("AARDVARK_NO_PROXY")))
    try:
        limits = Limits.from_env(os.environ)
        server = Server.prepare(config_dir, port, policy, limits)
    except (StartError, LimitError) as exc:
        print(f"burrow-dns: {exc}", file=sys.stderr)
        return 1
    if log_file and not _writable(log_file):
        server.close()
        return 1
    if not server.listeners:
        # Nothing to serve: like aardvark, succeed without leaving a process behind (nor a
        # pid file of a dead one; one that names a live server of this directory stays).
        from netns.dns import owned

        with owned.dir_lock(config_dir) as ours:
            if ours:
                owned.unlink_stale_pid(pid_file)
        return 0
    _raise_fd_limit()

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
        os._exit(_daemon(server, pid_file, log_file, w))
    except BaseException as exc:  # anything at all: tell the waiting parent, never hang it
        try:
            os.write(w, b"0" + str(exc).encode())
        finally:
            os._exit(1)


def _detach(log_file: str | None) -> None:
    """setsid, leave the cwd, stdio on /dev/null; stderr on the log file if there is one, so
    even a traceback that escapes everything is kept."""
    os.setsid()
    os.chdir("/")  # do not pin whatever mount the caller stood in
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    err = null
    if log_file:
        err = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    sys.stderr.flush()
    os.dup2(err, 2)
    for fd in {null, err}:
        os.close(fd)


def _daemon(server: object, pid_file: str, log_file: str | None, ready: int) -> int:
    from netns.dns import owned
    from netns.dns.server import Server
    from netns.dns.upstream import DEFAULT_TIMEOUT, TIMEOUT_ENV
    from netns.loop import Loop

    assert isinstance(server, Server)
    _detach(log_file)

    me = os.getpid()
    loop = Loop()
    server.start(loop, float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT)))

    def reload() -> bool:
        serving = server.reload()
        gc.freeze()
        return serving

    server.on_empty = loop.stop
    server.serve_reloads(reload)  # the engine's handshake (netns/dns/control.py)
    loop.on_signal(signal.SIGHUP, lambda: None if reload() else None)
    loop.on_signal(signal.SIGUSR1, lambda: server.stats.write(force=True))
    loop.on_signal(signal.SIGTERM, loop.stop)
    loop.on_signal(signal.SIGINT, loop.stop)
    # Only now may anyone find us: a SIGHUP sent before the handlers were set was lost (forked
    # from the engine, SIGHUP is ignored) or killed us, and with it a config change.
    with owned.dir_lock(server.config_dir):  # an exiting server's check of it waits for us
        with open(pid_file, "w") as f:
            f.write(str(me))  # no newline, like aardvark
    server.pid_file = pid_file
    os.write(ready, b"1")
    os.close(ready)
    log.info("serving %s port %d", ", ".join(server.listeners), server.port)
    # The table is long-lived: keep it out of the cyclic GC's full passes (latency spikes).
    gc.freeze()
    loop.run()
    server.close()
    with owned.dir_lock(server.config_dir) as ours:  # a newer server's pid file stays
        if ours:
            owned.unlink_pid_if(pid_file, me)
    log.info("exiting")
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
