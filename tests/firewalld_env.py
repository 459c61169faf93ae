"""A real firewalld for one test, on a private D-Bus, inside the test's throwaway host netns.

This is how Netavark's own suite does it (test/helpers.bash `setup_firewalld`): a `dbus-daemon`
with its own config and socket, then `firewalld --nofork --nopid --system-config <tmpdir>`
in the host netns. firewalld also gets a private mount namespace with empty /run and /var/log,
so nothing it writes lands on the machine. The machine's own firewalld and system bus are never
touched: the private socket's address goes only into the environment of this test's processes
(`FirewalldEnv.env`), never into os.environ.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from netns.firewalld import api
from netns.firewalld.bus import BusError
from tests.nsutil import Netns, have, is_root

# firewalld starts in ~1 s on a quiet machine; the suite runs on a loaded one.
START_TIMEOUT = 60.0

BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <auth>EXTERNAL</auth>
  <listen>unix:path={socket}</listen>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="false"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""

# Debian's defaults, spelled so firewalld reads no config file of the machine's.
FIREWALLD_CONF = """DefaultZone=public
CleanupOnExit=yes
CleanupModulesOnExit=no
Lockdown=no
IPv6_rpfilter=yes
IndividualCalls=no
LogDenied=off
FirewallBackend=nftables
FlushAllOnReload=yes
RFC3964_IPv4=yes
"""

# firewalld in its own mount ns: /run and /var/log are empty tmpfs, so its temp dir
# (/run/firewalld) and log never reach the machine. Its config is --system-config.
_FIREWALLD_SH = (
    "mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /var/log && "
    'exec firewalld --nofork --nopid --system-config "$1" --log-target console'
)


@dataclass
class FirewalldEnv:
    """A running firewalld; `env` is what a process of this test needs to reach it."""

    host: Netns
    dir: Path
    address: str
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {"DBUS_SYSTEM_BUS_ADDRESS": self.address}

    @property
    def system_config(self) -> Path:
        return self.dir / "etc"

    @property
    def log(self) -> str:
        try:
            return (self.dir / "firewalld.log").read_text(errors="replace")
        except OSError:
            return ""

    @contextmanager
    def api(self) -> Iterator[api.Firewalld]:
        with api.connect(self.env) as fw:
            assert fw is not None, f"firewalld is not running on {self.address}:\n{self.log}"
            yield fw

    def cmd(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """firewall-cmd against this firewalld, in the host netns."""
        return self.host.run(["env", f"DBUS_SYSTEM_BUS_ADDRESS={self.address}", "firewall-cmd", *args],
                             check=check)

    def state(self) -> str:
        with api.connect(self.env) as fw:
            return fw.state() if fw is not None else "NOT RUNNING"

    def wait_running(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                break
            try:
                if self.state() == "RUNNING":
                    return
            except BusError:
                pass  # firewalld owns its name but is still starting
            time.sleep(0.05)
        raise AssertionError(f"firewalld did not start in {timeout:g} s:\n{self.log}")

    def restart(self) -> None:
        """Stop firewalld (SIGTERM, as `systemctl restart` does) and start a new one on the
        same bus and config."""
        old = self.procs.pop()
        old.terminate()
        try:
            old.wait(timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired:
            old.kill()
            old.wait()
        self.procs.append(_spawn_firewalld(self))
        self.wait_running()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait()
        self.procs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)


def start(host: Netns) -> FirewalldEnv:
    """dbus-daemon + firewalld in `host`'s netns; returns once firewalld answers RUNNING."""
    # A short path: the socket's must fit sun_path (108 bytes).
    fenv = FirewalldEnv(host, Path(tempfile.mkdtemp(prefix="bfdc-fw-")), "")
    try:
        sock = fenv.dir / "bus.sock"
        fenv.address = f"unix:path={sock}"
        (fenv.dir / "bus.conf").write_text(BUS_CONF.format(socket=sock))
        fenv.system_config.mkdir()
        (fenv.system_config / "firewalld.conf").write_text(FIREWALLD_CONF)
        log = open(fenv.dir / "firewalld.log", "w")  # noqa: SIM115  (the children own it)
        with log:
            fenv.procs.append(host.popen(
                ["dbus-daemon", "--config-file", str(fenv.dir / "bus.conf"), "--nofork", "--nopidfile"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT))
            _wait_for(lambda: sock.exists() or fenv.procs[0].poll() is not None, 10)
        fenv.procs.append(_spawn_firewalld(fenv))
        fenv.wait_running()
        return fenv
    except BaseException:
        fenv.stop()
        raise


def _spawn_firewalld(fenv: FirewalldEnv) -> subprocess.Popen[str]:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **fenv.env}
    with open(fenv.dir / "firewalld.log", "a") as log:
        return fenv.host.popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", _FIREWALLD_SH,
             "firewalld", str(fenv.system_config)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)


def _wait_for(pred: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not pred() and time.monotonic() < deadline:
        time.sleep(0.01)


def missing_tools() -> list[str]:
    return [t for t in ("dbus-daemon", "firewalld", "firewall-cmd") if not have(t)]


@pytest.fixture
def firewalld(host_ns: Netns) -> Iterator[FirewalldEnv]:
    """A real firewalld in this test's host netns (`host_ns`), gone after the test."""
    if not is_root():
        pytest.skip("environment: running firewalld in a test namespace needs root")
    missing = missing_tools()
    if missing:
        pytest.skip(f"environment: {', '.join(missing)} not installed (scripts/install --test)")
    fenv = start(host_ns)
    try:
        yield fenv
    finally:
        fenv.stop()


__all__ = ["FirewalldEnv", "firewalld", "start"]
