"""Switching real Podman 4.3 between its own netavark 1.4 and burrow with containers running.

The story a user lives through, rootless and rootful: containers with published ports and
names on a custom network under Podman's netavark; `burrow podman enable`; the running
containers keep answering on their ports and by name, new ones work beside them, `podman
network connect/disconnect` works on an old one, and `podman stop/rm` of an old one (now torn
down by burrow) leaves none of its firewall rules behind. Then `burrow podman disable` with
burrow's containers running: the same the other way round.

What this pins: a container set up by one tool is torn down by the other, so both must use one
firewall driver. Netavark 1.4 writes iptables rules; burrow's default is nftables, and with it
each switch left the other tool's DNAT/masquerade rules of every container that lived across
it (a stale DNAT for a host port can win over the next container's). `enable` now pins
burrow-netavark to the driver of the netavark it replaces (NETAVARK_FW=iptables here).
"""

from __future__ import annotations

import re
import shutil
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.podman_env import BURROW, IMAGE, RootfulWorld, RootlessWorld, free_port_block, wait_for
from tests.e2e.test_podman_rootlessport import port_free
from tests.nsutil import have

pytestmark = [pytest.mark.e2e]
HTTPD = [IMAGE, "httpd", "-f", "-p", "80", "-h", "/www"]


class Side:
    """One Podman world as the story needs it (rootless or rootful)."""

    def __init__(self, podman: Callable[..., str], burrow: Callable[..., str],
                 get: Callable[[int], str], ruleset: Callable[[], str],
                 in_ctr: Callable[[str, list[str]], str]) -> None:
        self.podman, self.burrow, self.get, self.ruleset, self.in_ctr = podman, burrow, get, ruleset, in_ctr

    def ip(self, ctr: str, net: str) -> str:
        return self.podman("inspect", "-f", f"{{{{.NetworkSettings.Networks.{net}.IPAddress}}}}", ctr).strip()

    def resolve(self, ctr: str, server: str, name: str) -> list[str]:
        # No neighbour flush first: netavark 1.4's bridges have no MAC of their own and follow
        # their lowest port's; burrow pins it on its first attach (netns/bridgemac.py), so a
        # port leaving (old's, below) no longer takes the gateway away from the others.
        return self.in_ctr(ctr, ["dig", "+short", "+tries=2", "+time=2", f"@{server}", name]).split()


def left_in(rules: str, ip: str, port: int) -> list[str]:
    """Firewall rules that still name a removed container's address or host port."""
    addr = re.compile(rf"(?<![\d.]){re.escape(ip)}(?![\d])")
    return [ln for ln in rules.splitlines() if addr.search(ln) or f"dport {port} " in f"{ln} "]


def story(s: Side, port: int, nets: tuple[str, str], enable: tuple[str, ...],
          disable: tuple[str, ...]) -> None:
    """`nets`: the first three octets of the two networks' /24s."""
    s.podman("network", "create", "--subnet", f"{nets[0]}.0/24", "swa")
    s.podman("network", "create", "--subnet", f"{nets[1]}.0/24", "swb")
    gw_a, gw_b = f"{nets[0]}.1", f"{nets[1]}.1"
    s.podman("run", "-d", "--name", "old", "--network", "swa", "-p", f"127.0.0.1:{port}:80", *HTTPD)
    s.podman("run", "-d", "--name", "peer", "--network", "swa", IMAGE, "sleep", "600")
    assert wait_for(lambda: s.get(port) == "hello-from-pd\n")
    old_ip = s.ip("old", "swa")

    out = s.burrow(*enable)
    assert "NETAVARK_FW=iptables" in out, out  # the pin is shown before it is written
    # The running containers keep their port and their names.
    assert s.get(port) == "hello-from-pd\n"
    assert s.resolve("peer", gw_a, "old") == [old_ip]
    # A new one (burrow's) works beside them, both ways by name.
    s.podman("run", "-d", "--name", "new", "--network", "swa", "-p", f"127.0.0.1:{port + 1}:80", *HTTPD)
    new_ip = s.ip("new", "swa")
    assert wait_for(lambda: s.get(port + 1) == "hello-from-pd\n")
    assert s.resolve("peer", gw_a, "new") == [new_ip]
    assert s.resolve("new", gw_a, "old") == [old_ip]
    # connect/disconnect on a container netavark set up, now through burrow.
    s.podman("network", "connect", "--alias", "old-b", "swb", "old")
    assert s.resolve("old", gw_b, "old-b") == [s.ip("old", "swb")]
    s.podman("network", "disconnect", "swb", "old")
    assert s.get(port) == "hello-from-pd\n"
    # Stopped and removed by burrow: nothing of netavark's rules for it stays.
    s.podman("stop", "-t", "0", "old")
    s.podman("rm", "old")
    assert left_in(s.ruleset(), old_ip, port) == []
    assert s.get(port + 1) == "hello-from-pd\n"

    s.burrow(*disable)
    assert s.get(port + 1) == "hello-from-pd\n"  # burrow's container, now under netavark
    assert s.resolve("peer", gw_a, "new") == [new_ip]
    s.podman("run", "-d", "--name", "late", "--network", "swa", "-p", f"127.0.0.1:{port + 2}:80", *HTTPD)
    assert wait_for(lambda: s.get(port + 2) == "hello-from-pd\n")
    assert s.resolve("late", gw_a, "new") == [new_ip]
    s.podman("stop", "-t", "0", "new")
    s.podman("rm", "new")
    assert left_in(s.ruleset(), new_ip, port + 1) == []
    assert s.get(port + 2) == "hello-from-pd\n"


def host_get(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            return str(r.read().decode())
    except OSError:
        return ""


@pytest.fixture
def rootless_world(podman_rootfs: Path, rootless_user: Any) -> Iterator[RootlessWorld]:
    if not have("dig"):
        pytest.skip("environment: dig (bind9-dnsutils) is not installed")
    base = Path(tempfile.mkdtemp(prefix="burrow-sw-", dir="/tmp"))
    base.chmod(0o755)
    w = RootlessWorld(rootless_user, base / "w", podman_rootfs, enable=False)
    try:
        yield w
    finally:
        w.close()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.rootless
def test_rootless_switch_both_ways_with_containers_running(rootless_world: RootlessWorld) -> None:
    w = rootless_world

    def podman(*args: str) -> str:
        return str(w.podman(*args).out)

    def burrow(*args: str) -> str:
        return str(w.run([str(BURROW), *args], check=True).out)

    def ruleset() -> str:
        ns = w.rootless_netns()
        assert ns, "no rootless netns"
        return str(w.run(["podman", "unshare", "nsenter", f"--net={ns}", "nft", "list", "ruleset"],
                         check=True).out)

    def in_ctr(ctr: str, cmd: list[str]) -> str:
        return w.in_ctr(ctr, cmd, check=False).stdout

    side = Side(podman, burrow, host_get, ruleset, in_ctr)
    port = free_port_block(3)
    story(side, port, ("10.89.61", "10.89.62"),
          ("podman", "enable", "--user"), ("podman", "disable", "--user"))
    # No port forwarder outlives its container: Go's rootlessport of the container made before
    # enable, burrow-rootlessport of the one stopped after disable.
    for p in (port, port + 1):
        assert wait_for(lambda p=p: port_free(p)), f"host port {p} still held"


@pytest.fixture
def rootful_world(podman_rootfs: Path, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[RootfulWorld]:
    if not have("dig"):
        pytest.skip("environment: dig (bind9-dnsutils) is not installed")
    w = RootfulWorld(tmp_path_factory.mktemp("switch"), podman_rootfs, backend="netavark")
    try:
        # Podman's DNAT of 127.0.0.1 needs it (netavark 1.4 sets it per bridge, after the fact).
        w.run(["sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1"])
        yield w
    finally:
        w.close()


@pytest.mark.root
def test_rootful_switch_both_ways_with_containers_running(rootful_world: RootfulWorld) -> None:
    w = rootful_world
    helpers = str(w.base / "helpers")

    def get(port: int) -> str:
        return w.run(["curl", "-s", "-m5", f"http://127.0.0.1:{port}/"], check=False).stdout

    def in_ctr(ctr: str, cmd: list[str]) -> str:
        return w.in_ctr(ctr, cmd, check=False).stdout

    side = Side(lambda *a: w.podman(*a).stdout, w.burrow, get,
               lambda: w.run(["nft", "list", "ruleset"]).stdout, in_ctr)
    story(side,
          18611, ("10.89.63", "10.89.64"), ("podman", "enable", "--system", "--helper-dir", helpers),
          ("podman", "disable", "--system", "--helper-dir", helpers))
