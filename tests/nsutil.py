"""Throwaway namespaces for tests, made the way Netavark's own suite makes them.

Each `Netns` is an anonymous net+mount namespace held alive by `unshare -nm sleep inf`, so
nothing here touches the machine's own network, and killing the holder removes everything
(links, addresses, nft/iptables tables) that a test created inside it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def unique(prefix: str, length: int = 6) -> str:
    """A name no other test or parallel run will pick (keep it <= 15 chars for links)."""
    return f"{prefix}{secrets.token_hex(length // 2 + 1)[:length]}"


def is_root() -> bool:
    return os.geteuid() == 0


def need_root() -> None:
    """Skip the calling test or fixture where test namespaces cannot be made (not root)."""
    if not is_root():
        import pytest  # here: scripts import this module without pytest

        pytest.skip("environment: creating test namespaces needs root (run the suite as root)")


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


class Netns:
    """A network + mount namespace held by a sleeping process."""

    def __init__(self, *, loopback_up: bool = True) -> None:
        self.proc = subprocess.Popen(
            ["unshare", "--net", "--mount", "--propagation", "private", "sleep", "infinity"],
            stdin=subprocess.DEVNULL,
        )
        # The namespace exists once /proc/PID/ns/net differs from ours.
        mine = os.stat("/proc/self/ns/net").st_ino
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                if os.stat(self.path).st_ino != mine:
                    break
            except FileNotFoundError:
                pass
            time.sleep(0.005)
        else:
            self.close()
            raise RuntimeError("unshare did not create a namespace in 5 s")
        if loopback_up:
            self.run(["ip", "link", "set", "lo", "up"])

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def path(self) -> str:
        return f"/proc/{self.proc.pid}/ns/net"

    def argv(self, cmd: Sequence[str]) -> list[str]:
        return ["nsenter", "-t", str(self.pid), "-n", "-m", "--", *cmd]

    def run(
        self, cmd: Sequence[str], *, check: bool = True, input: str | None = None,
        env: dict[str, str] | None = None, timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            self.argv(cmd), input=input, capture_output=True, text=True, env=env, timeout=timeout,
        )
        if check and res.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} failed in netns {self.pid} (rc {res.returncode}):\n"
                f"stdout: {res.stdout}\nstderr: {res.stderr}"
            )
        return res

    def popen(self, cmd: Sequence[str], **kw: Any) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(cmd), text=True, **kw)

    def links(self) -> list[dict[str, Any]]:
        return json.loads(self.run(["ip", "-j", "-d", "link", "show"]).stdout)

    def link_names(self) -> set[str]:
        return {link["ifname"] for link in self.links()}

    def addrs(self, dev: str) -> list[str]:
        data = json.loads(self.run(["ip", "-j", "addr", "show", "dev", dev]).stdout)
        return [f"{a['local']}/{a['prefixlen']}" for d in data for a in d["addr_info"]]

    def sysctl(self, path: str) -> str:
        """Read /proc/sys/<path> inside the namespace (path uses '/', as ifnames may hold dots)."""
        return self.run(["cat", f"/proc/sys/{path}"]).stdout.strip()

    def close(self) -> None:
        """Kill every process still inside the namespace (daemons a test started), then the holder."""
        try:
            ino = os.stat(self.path).st_ino
        except FileNotFoundError:
            ino = None
        if ino is not None:
            for entry in os.listdir("/proc"):
                if not entry.isdigit() or int(entry) == self.proc.pid:
                    continue
                try:
                    if os.stat(f"/proc/{entry}/ns/net").st_ino == ino:
                        os.kill(int(entry), signal.SIGKILL)
                except (FileNotFoundError, ProcessLookupError, PermissionError):
                    pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def __enter__(self) -> Netns:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
