"""Rootless Podman 4.3.1 on burrow: the harness user (tests/rootless_user.py), `burrow podman
enable --user`, a bridge network in Podman's own rootless netns (slirp4netns), burrow-netavark
exec'd inside it by Podman, ports through rootlessport on the real host's loopback.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.podman_env import IMAGE, RootlessWorld, free_port_block, probe, start_echo
from tests.nsutil import have

pytestmark = [pytest.mark.e2e, pytest.mark.rootless]


@pytest.fixture(scope="module")
def rworld(podman_rootfs: Path, rootless_user: Any, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[RootlessWorld, int]]:
    if not have("dig"):
        pytest.skip("environment: dig (bind9-dnsutils) is not installed")
    # Under /tmp itself: pytest's own tmp tree is 0700 root, which the test user cannot enter.
    base = Path(tempfile.mkdtemp(prefix="burrow-pd-", dir="/tmp"))
    base.chmod(0o755)
    w = RootlessWorld(rootless_user, base / "w", podman_rootfs)
    port = free_port_block(6)
    echo = []
    try:
        w.podman("network", "create", "--subnet", "10.89.17.0/24", "--subnet", "fd89:17::/64", "r1")
        w.podman("network", "create", "--subnet", "10.89.18.0/24", "r2")
        w.podman("run", "-d", "--name", "pra",
                 "--network", "r1:ip=10.89.17.10,ip=fd89:17::10,mac=92:d0:c6:0a:17:10,alias=pra-alias",
                 "-p", f"127.0.0.1:{port}:80", "-p", f"[::1]:{port}:80",
                 "-p", f"127.0.0.1:{port + 1}:53/udp", "-p", f"[::1]:{port + 1}:53/udp",
                 "-p", f"127.0.0.1:{port + 2}-{port + 4}:8100-8102", IMAGE, "sleep", "600")
        w.podman("run", "-d", "--name", "prb", "--network", "r1", "--network", "r2", IMAGE, "sleep", "600")
        echo.append(start_echo(w.pid("pra"), ["80/tcp", "53/udp", "8100/tcp", "8101/tcp", "8102/tcp"]))
        yield w, port
    finally:
        for e in echo:
            e.kill()
            e.wait()
        w.close()
        shutil.rmtree(base, ignore_errors=True)


def test_enable_user_status(rworld: tuple[RootlessWorld, int]) -> None:
    w, _ = rworld
    assert "containers.conf.d/99-burrow.conf" in w.enable_out
    info = json.loads(w.run([str(Path(__file__).resolve().parents[2] / ".venv/bin/burrow"),
                             "podman", "status", "--user", "--format", "json"], check=True).out)
    assert info["rootless"] and info["podman_uses_burrow"], info


def test_rootless_static_addresses_dns_ping(rworld: tuple[RootlessWorld, int]) -> None:
    w, _ = rworld
    nets = json.loads(w.podman("inspect", "pra").out)[0]["NetworkSettings"]["Networks"]
    assert nets["r1"]["IPAddress"] == "10.89.17.10" and nets["r1"]["GlobalIPv6Address"] == "fd89:17::10"
    assert nets["r1"]["MacAddress"] == "92:d0:c6:0a:17:10"
    assert w.in_ctr("prb", ["ping", "-c1", "-W2", "10.89.17.10"], check=False).returncode == 0
    assert w.in_ctr("prb", ["ping", "-c1", "-W2", "fd89:17::10"], check=False).returncode == 0
    out = w.in_ctr("prb", ["dig", "+short", "@10.89.17.1", "pra-alias"]).stdout.split()
    assert out == ["10.89.17.10"]
    out = w.in_ctr("prb", ["dig", "+short", "@10.89.17.1", "pra", "AAAA"]).stdout.split()
    assert out == ["fd89:17::10"]
    # prb is on r1 and r2; from r2's listener it still finds pra (shared network r1).
    assert w.in_ctr("prb", ["dig", "+short", "@10.89.18.1", "pra"]).stdout.split() == ["10.89.17.10"]


def test_rootless_ports_on_host_loopback(rworld: tuple[RootlessWorld, int]) -> None:
    w, port = rworld

    def host(cmd: list[str], check: bool = False) -> Any:
        import subprocess

        return subprocess.run(cmd, capture_output=True, text=True, timeout=20)

    assert probe(host, "tcp", "127.0.0.1", port) == "tcp80:hi"
    assert probe(host, "tcp", "::1", port) == "tcp80:hi"
    assert probe(host, "udp", "127.0.0.1", port + 1) == "udp53:hi"
    assert probe(host, "udp", "::1", port + 1) == "udp53:hi"
    for i in range(3):
        assert probe(host, "tcp", "127.0.0.1", port + 2 + i) == f"tcp{8100 + i}:hi"


def test_rootless_connect_v4_network_to_container_with_v6_port(rworld: tuple[RootlessWorld, int]) -> None:
    w, port = rworld
    w.podman("run", "-d", "--name", "prc", "--network", "r1", "-p", f"[::1]:{port + 5}:80", IMAGE,
             "sleep", "600")
    try:
        res = w.podman("network", "connect", "r2", "prc", check=False)
        assert res.rc == 0, res.err
    finally:
        w.podman("rm", "-f", "-t", "0", "prc", check=False)


def test_rootless_connect_disconnect_and_cleanup(rworld: tuple[RootlessWorld, int]) -> None:
    w, _ = rworld
    w.podman("network", "disconnect", "r2", "prb")
    assert "10.89.18." not in w.in_ctr("prb", ["ip", "addr"]).stdout
    w.podman("network", "connect", "--ip", "10.89.18.50", "--alias", "prb-alias2", "r2", "prb")
    assert "10.89.18.50/24" in w.in_ctr("prb", ["ip", "addr"]).stdout
    assert w.in_ctr("prb", ["dig", "+short", "@10.89.18.1", "prb-alias2"]).stdout.split() == ["10.89.18.50"]
    w.podman("network", "reload", "pra")
    w, port = rworld[0], rworld[1]
    assert w.in_ctr("prb", ["ping", "-c1", "-W2", "10.89.17.10"], check=False).returncode == 0
    import subprocess

    assert probe(lambda c, check=False: subprocess.run(c, capture_output=True, text=True, timeout=20),
                 "tcp", "127.0.0.1", port) == "tcp80:hi"
    ns = w.rootless_netns()
    assert ns
    w.podman("stop", "-t", "0", "pra", "prb")
    w.podman("rm", "pra", "prb")
    # The last container gone: Podman removes its rootless netns (and with it every bridge,
    # veth and rule burrow made there); burrow's DNS config for the user is empty.
    assert w.rootless_netns() is None
    dns_dir = Path(w.session.runtime) / "containers" / "networks" / "aardvark-dns"
    left = [p.name for p in dns_dir.iterdir()] if dns_dir.exists() else []
    assert left == [], left
