"""Aardvark-format DNS config files and the DNS daemon's lifecycle (spec/netavark.md §5).

Files live in `<config>/aardvark-dns/`, one per network (`<name>%int` for internal networks), all
writes under an flock on `<config>/aardvark.lock`. After a change the daemon gets SIGHUP; if it
is not running, setup starts it (`<bin> --config <dir> -p <port> run`, which daemonizes).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from netns import locks, statefiles
from netns.errors import BurrowError

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
        return f"{self.network}%int" if self.internal else self.network

    def header(self) -> str:
        line = ",".join(self.listen_ips)
        return f"{line} {','.join(self.network_dns)}" if self.network_dns else line

    def line(self) -> str:
        text = f"{self.container_id} {','.join(self.ipv4)} {','.join(self.ipv6)} {','.join(self.names)}"
        return f"{text} {','.join(self.container_dns)}" if self.container_dns else text


def _pid_alive(pid: int) -> bool:
    """A live, non-zombie process: PID 1 here does not reap, so kill(0) alone lies."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


class AardvarkConfig:
    def __init__(self, config_dir: Path, binary: str, port: int) -> None:
        self.dir = config_dir / statefiles.AARDVARK_DIR
        self.lock_path = config_dir / statefiles.AARDVARK_LOCK
        self.binary = binary
        self.port = port

    @property
    def available(self) -> bool:
        # Netavark skips DNS (with an info log) when the binary is missing; so do we.
        return os.access(self.binary, os.X_OK)

    @contextmanager
    def locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with locks.locked(self.lock_path):
            yield

    def add(self, entries: Sequence[Entry]) -> None:
        with self.locked():
            for e in entries:
                path = self.dir / e.filename
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
                    os.write(fd, (e.header() + "\n").encode())
                    os.close(fd)
                except FileExistsError:
                    pass
                with open(path, "a") as f:
                    f.write(e.line() + "\n")

    def remove(self, container_id: str, networks: Sequence[tuple[str, bool]]) -> None:
        """Drop the container's lines; a file left with only its header goes."""
        with self.locked():
            for name, internal in networks:
                path = self.dir / (f"{name}%int" if internal else name)
                try:
                    lines = path.read_text().splitlines()
                except FileNotFoundError:
                    continue
                kept = [
                    ln
                    for i, ln in enumerate(lines)
                    if i == 0 or container_id not in ln.split(" ")[:1]
                ]
                if len(kept) <= 1:
                    path.unlink(missing_ok=True)
                else:
                    tmp = path.with_name(f".{path.name}.tmp")
                    tmp.write_text("\n".join(kept) + "\n")
                    tmp.replace(path)

    def update_dns(self, network: str, servers: Sequence[str]) -> None:
        with self.locked():
            for name in (network, f"{network}%int"):
                path = self.dir / name
                if path.exists():
                    break
            else:
                raise BurrowError(f"network {network} has no DNS configuration in {self.dir}")
            lines = path.read_text().splitlines()
            listen = lines[0].split(" ")[0]
            lines[0] = f"{listen} {','.join(servers)}" if servers else listen
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text("\n".join(lines) + "\n")
            tmp.replace(path)

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
            return int((self.dir / statefiles.AARDVARK_PID).read_text().strip())
        except (OSError, ValueError):
            return None

    def notify(self, *, start: bool, env: dict[str, str] | None = None) -> None:
        """SIGHUP the running server; if none runs and `start`, start it and wait until ready."""
        pid = self._pid()
        if pid is not None and _pid_alive(pid):
            try:
                os.kill(pid, signal.SIGHUP)
                return
            except ProcessLookupError:
                pass
        if not start:
            return
        argv = [self.binary, "--config", str(self.dir), "-p", str(self.port), "run"]
        log.info("starting DNS server: %s", " ".join(argv))
        forked = self._fork_burrow_dns(argv[1:], env)
        if forked is not None:
            code, text = forked
            if code != 0:
                raise BurrowError(f"aardvark-dns failed to start: {text.strip() or f'exit code {code}'}")
            return
        try:
            res = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                env=env, timeout=30, close_fds=True,
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
