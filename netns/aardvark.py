"""Aardvark-format DNS config files and the DNS daemon's lifecycle (spec/netavark.md §5).

Files live in `<config>/aardvark-dns/`, one per network (`<name>%int` for internal networks), all
writes under an flock on `<config>/aardvark.lock`. After a change burrow-dns is asked to reload
and answers once it serves the change (netns/dns/control.py); another server gets SIGHUP. If
none is running, setup starts it (`<bin> --config <dir> -p <port> run`, which daemonizes).
The format itself (names, lines, what a field may hold) is netns/dns/config.py's, which the
server reads with: every line is rendered there, and refused there if it would not read back.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from netns import locks, logs, proctitle, statefiles
from netns.dns import config as fmt
from netns.dns import control
from netns.errors import BurrowError, context

log = logging.getLogger("netns.aardvark")


@dataclass(frozen=True)
class Entry:
    """One container on one network, as one config line (plus the network's header)."""

    network: str
    internal: bool
    listen_ips: tuple[str, ...]  # the gateways the server listens on
    network_dns: tuple[str, ...]
    container_id: str
    ipv4: tuple[str, ...]
    ipv6: tuple[str, ...]
    names: tuple[str, ...]  # container name, then aliases
    container_dns: tuple[str, ...]

    @property
    def filename(self) -> str:
        return fmt.filename(self.network, self.internal)

    def header(self) -> str:
        return fmt.format_header(self.listen_ips, self.network_dns)

    def line(self) -> str:
        ctr = fmt.Container(self.container_id, self.ipv4, self.ipv6, self.names, self.container_dns)
        return fmt.format_container(ctr)

    def rendered(self) -> tuple[str, str, str]:
        """(file name, header, record line), or BurrowError naming what cannot be written."""
        try:
            return self.filename, self.header(), self.line()
        except fmt.ConfigError as exc:
            raise BurrowError(f"DNS record of container {self.container_id!r} on network "
                              f"{self.network!r}: {exc}") from None


def _pid_alive(pid: int) -> bool:
    """A live, non-zombie process: PID 1 here does not reap, so kill(0) alone lies."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


class AardvarkConfig:
    def __init__(self, config_dir: Path, binary: str, port: int, rootless: bool = False) -> None:
        self.dir = config_dir / statefiles.AARDVARK_DIR
        self.lock_path = config_dir / statefiles.AARDVARK_LOCK
        self.binary = binary
        self.port = port
        self.rootless = rootless  # only for `systemd-run --user`, as netavark's --rootless

    @property
    def available(self) -> bool:
        # Netavark skips DNS (with an info log) when the binary is missing; so do we.
        return os.access(self.binary, os.X_OK)

    @contextmanager
    def locked(self) -> Iterator[None]:
        statefiles.private_dir(self.dir)
        with locks.locked(self.lock_path):
            yield

    def add(self, entries: Sequence[Entry]) -> None:
        rendered = [e.rendered() for e in entries]  # validate all, then write
        with self.locked():
            for name, header, line in rendered:
                path = self.dir / name
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
                    os.write(fd, (header + "\n").encode())
                    os.close(fd)
                except FileExistsError:
                    pass
                try:
                    statefiles.append_text(path, line + "\n")
                except OSError as exc:
                    raise context(f"DNS config {path}", exc) from None

    def _file(self, network: str, internal: bool) -> Path:
        try:
            return self.dir / fmt.filename(network, internal)
        except fmt.ConfigError as exc:
            raise BurrowError(f"DNS config of network {network!r}: {exc}") from None

    def remove(self, container_id: str, networks: Sequence[tuple[str, bool]],
               whole: Sequence[tuple[str, bool]] = ()) -> None:
        """Drop the container's lines; a file left with only its header goes, and so do the
        files of `whole` (networks with no container left), whatever they still hold."""
        with self.locked():
            for name, internal in whole:
                self._file(name, internal).unlink(missing_ok=True)
            for name, internal in networks:
                path = self._file(name, internal)
                try:
                    text = fmt.without(statefiles.read_bytes(path), container_id)
                except FileNotFoundError:
                    continue
                except (OSError, ValueError) as exc:
                    raise context(f"DNS config {path}", exc) from None
                if text is None:
                    path.unlink(missing_ok=True)
                else:
                    statefiles.replace_text(path, text)

    def update_dns(self, network: str, servers: Sequence[str]) -> None:
        with self.locked():
            for internal in (False, True):
                path = self._file(network, internal)
                if path.exists():
                    break
            else:
                raise BurrowError(f"network {network} has no DNS configuration in {self.dir}")
            try:
                lines = statefiles.read_text(path).splitlines()
            except (OSError, ValueError) as exc:
                raise context(f"DNS config {path}", exc) from None
            try:
                listen, _ = fmt.header_of(lines[0] if lines else "")
                lines[:1] = [fmt.format_header(listen, servers)]
            except fmt.ConfigError as exc:
                raise BurrowError(f"DNS config of network {network!r}: {exc}") from None
            statefiles.replace_text(path, "\n".join(lines) + "\n")

    def _fork_burrow_dns(self, args: list[str], env: dict[str, str] | None) -> tuple[int, str] | None:
        """Start burrow-dns by forking this (warm) process instead of exec'ing a new Python.

        Exec'ing it costs ~40 ms of interpreter and dnslib start-up on every cold network;
        a fork of the warm engine costs ~1 ms. Returns None when the binary isn't burrow-dns.
        """
        if not _is_burrow_dns(self.binary):
            return None
        from netns.dns import cli

        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child becomes `burrow-dns ... run`, which daemonizes itself
            code = 1
            try:
                os.close(r)
                null = os.open(os.devnull, os.O_RDWR)
                os.dup2(null, 0)
                os.dup2(null, 1)
                os.dup2(w, 2)
                # Before the environment is swapped: setproctitle finds the memory it rewrites
                # through environ on first use, and silently does nothing once it was cleared.
                proctitle.set_title(" ".join(["burrow-dns", *args]))
                if env is not None:
                    os.environ.clear()
                    os.environ.update(env)
                code = cli.main(args)
            except BaseException as exc:  # noqa: BLE001 - report, never return into the engine
                os.write(2, f"{exc!r}".encode())
            finally:
                os._exit(code)
        os.close(w)
        chunks = []
        while chunk := os.read(r, 65536):
            chunks.append(chunk)
        os.close(r)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status), b"".join(chunks).decode(errors="replace")

    def _pid(self) -> int | None:
        try:
            return int(statefiles.read_text(self.dir / statefiles.AARDVARK_PID).strip())
        except (OSError, ValueError):
            return None

    def notify(self, *, start: bool, env: dict[str, str] | None = None) -> None:
        """Have the running server apply the config; if none runs and `start`, start it and
        wait until ready. burrow-dns is asked over its reload socket and answers once the
        change is served, so a name resolves as soon as setup returns; any other server gets
        SIGHUP (which returns at once), as netavark sends it."""
        pid = self._pid()
        if pid is not None and _pid_alive(pid):
            applied = control.request(str(self.dir), RELOAD_TIMEOUT)
            if applied or (applied is False and not start):
                return
            if applied is False:  # it had no network left and is stopping: wait, then start
                _wait_gone(pid, RELOAD_TIMEOUT)
            else:
                try:
                    os.kill(pid, signal.SIGHUP)
                    return
                except ProcessLookupError:
                    pass
        if not start:
            return
        # A killed burrow-dns leaves its stats file and reload socket; aardvark-dns 1.4 would
        # read them as networks and refuse the whole directory.
        for leftover in (statefiles.DNS_STATS, statefiles.DNS_CONTROL):
            (self.dir / leftover).unlink(missing_ok=True)
        argv = [self.binary, "--config", str(self.dir), "-p", str(self.port), "run"]
        log.info("starting DNS server: %s", " ".join(argv))
        forked = self._fork_burrow_dns(argv[1:], env)
        if forked is not None:
            code, text = forked
            if code != 0:
                raise BurrowError(f"aardvark-dns failed to start: {text.strip() or f'exit code {code}'}")
            for line in text.splitlines():  # what it said before it daemonized: skipped files,
                log.info("%s", line)  # addresses gone from this netns
            return
        argv = launch_argv(argv, self.rootless, os.path.isdir(SYSTEMD_BOOTED))
        run_env = {**(env if env is not None else os.environ), "RUST_LOG": rust_log(env)}
        try:
            res = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                env=run_env, timeout=30, close_fds=True,
            )  # fmt: skip
        except OSError as exc:
            raise BurrowError(
                f"failed to start {self.binary}: IO error: {exc.strerror} (os error {exc.errno})"
            ) from exc
        except subprocess.TimeoutExpired:
            raise BurrowError(f"{self.binary} did not report ready within 30 s") from None
        if res.returncode != 0:
            detail = res.stderr.decode(errors="replace").strip() or f"exit code {res.returncode}"
            raise BurrowError(f"aardvark-dns failed to start: {detail}")


RELOAD_TIMEOUT = 2.0  # seconds a setup waits for burrow-dns to apply its change, then SIGHUP


def _wait_gone(pid: int, timeout: float) -> None:
    """Until `pid` has exited (bounded): a new server could not bind its port before."""
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.002)


SYSTEMD_BOOTED = "/run/systemd/system"  # sd_booted(3), as netavark checks it
_RUST_LEVELS = {logging.ERROR: "ERROR", logging.WARNING: "WARN", logging.INFO: "INFO",
                logging.DEBUG: "DEBUG", logs.TRACE: "TRACE"}


def launch_argv(argv: list[str], rootless: bool, systemd_booted: bool) -> list[str]:
    """Another DNS binary runs as netavark runs it (spec §5): in its own scope when systemd is
    booted and systemd-run is on PATH, so it outlives the caller's cgroup."""
    if not systemd_booted or shutil.which("systemd-run") is None:
        return argv
    return ["systemd-run", "-q", "--scope", *(["--user"] if rootless else []), *argv]


def rust_log(env: Mapping[str, str] | None) -> str:
    """netavark sets RUST_LOG to its own maximum level (`log::max_level()`, e.g. `INFO`) for
    the server it execs; its level is RUST_LOG's, env_logger's default being error."""
    level = logs.parse_level((env if env is not None else os.environ).get("RUST_LOG"))
    return _RUST_LEVELS.get(level if level is not None else logging.ERROR, "TRACE")


def _is_burrow_dns(binary: str) -> bool:
    if os.path.basename(binary) == "burrow-dns":
        return True
    try:  # a wrapper script (e.g. the `aardvark-dns` in burrow's helper_binaries_dir)
        with open(binary, "rb") as f:
            return b"netns.dns.cli" in f.read(1024)
    except OSError:
        return False


def dns_port(env: dict[str, str] | os._Environ[str]) -> int:
    text = env.get("NETAVARK_DNS_PORT")
    if not text:
        return 53
    try:
        port = int(text)
        if not 1 <= port <= 65535:
            raise ValueError("out of range")
    except ValueError as exc:
        raise BurrowError(f"Invalid NETAVARK_DNS_PORT {text}: {exc}") from None
    return port
