"""Podman 4.3 with `network_backend = "cni"` runs containers through a conflist of type burrow-cni.

Podman is isolated as in tests/e2e/podman_env.RootfulWorld (private net+mount namespace, its own
/etc/containers, /etc/cni/net.d and storage). burrow-cni is found through a containers.conf
drop-in (`cni_plugin_dirs`) pointing at a logging wrapper, so the test also sees exactly what
Podman sent (CNI_ARGS K8S_POD_NAME, runtimeConfig portMappings and aliases, prevResult on DEL).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cni_env import calls, write_plugin_wrapper
from tests.e2e.podman_env import IMAGE, RootfulWorld
from tests.nsutil import VENV_BIN, unique

pytestmark = [pytest.mark.e2e, pytest.mark.root]
NET = "bn-podcni"


@pytest.fixture
def tmp_short() -> Iterator[Path]:
    """Podman refuses a runroot longer than 50 characters: pytest's tmp_path is too long."""
    d = Path(tempfile.mkdtemp(prefix="bn-pc", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def world(podman_rootfs: Path, tmp_short: Path) -> Iterator[RootfulWorld]:
    tmp_path = tmp_short
    w = RootfulWorld(tmp_path / "w", podman_rootfs, backend="cni")
    try:
        write_plugin_wrapper(tmp_path / "plugins", tmp_path / "cni-log")
        dropin = tmp_path / "w" / "etc-containers" / "containers.conf.d"
        dropin.mkdir(exist_ok=True)
        (dropin / "60-burrow-cni.conf").write_text(
            f'[network]\ncni_plugin_dirs = ["{tmp_path}/plugins", "/usr/lib/cni"]\n')
        bridge = unique("bn-pc")
        conflist: dict[str, Any] = {"cniVersion": "1.0.0", "name": NET, "plugins": [{
            "type": "burrow-cni", "bridge": bridge, "isGateway": True, "ipMasq": True,
            "dnsNames": True, "dnsBinary": str(VENV_BIN / "burrow-dns"),
            "stateDir": str(tmp_path / "cni-state"),
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.80.0.0/24"}], [{"subnet": "fd80::/64"}]],
                     "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}], "dataDir": str(tmp_path / "ipam")},
            "capabilities": {"portMappings": True, "ips": True, "mac": True, "aliases": True},
        }]}  # fmt: skip
        (tmp_path / "w" / "cni-net.d" / f"{NET}.conflist").write_text(json.dumps(conflist))
        w.bridge = bridge  # type: ignore[attr-defined]
        yield w
    finally:
        w.close()


def test_podman_cni_two_containers_dns_published_port_and_clean_removal(world: RootfulWorld, tmp_short: Path) -> None:
    tmp_path = tmp_short
    nets = world.podman("network", "ls", "--format", "{{.Name}} {{.Driver}}").stdout
    assert f"{NET} burrow-cni" in nets
    world.podman("run", "-d", "--name", "pa", "--network", NET, "--network-alias", "web",
                 "-p", "18090:80", IMAGE, "httpd", "-f", "-p", "80", "-h", "/www")  # fmt: skip
    world.podman("run", "-d", "--name", "pb", "--network", NET, "--ip", "10.80.0.77",
                 "--mac-address", "02:42:0a:50:00:4d", IMAGE, "sleep", "600")  # fmt: skip

    # Podman's view comes from burrow-cni's result.
    def inspect(ctr: str, field: str) -> str:
        return world.podman("inspect", "-f", f'{{{{(index .NetworkSettings.Networks "{NET}").{field}}}}}', ctr).stdout.strip()

    ip_a, ip_b, mac_b = inspect("pa", "IPAddress"), inspect("pb", "IPAddress"), inspect("pb", "MacAddress")
    assert ip_a.startswith("10.80.0.") and ip_b == "10.80.0.77" and mac_b == "02:42:0a:50:00:4d"
    resolv = world.podman("exec", "pb", "cat", "/etc/resolv.conf").stdout
    assert "search dns.podman" in resolv and "nameserver 10.80.0.1" in resolv

    # The two containers reach each other, by address, by name and by alias (burrow-dns).
    for host in (ip_a, "pa", "web", "pa.dns.podman"):
        got = world.podman("exec", "pb", "wget", "-qO-", f"http://{host}:80/").stdout.strip()
        assert got == "hello-from-pd", host
    # The published port, through kernel DNAT: from the node, to its bridge address and localhost.
    for addr in ("10.80.0.1", "127.0.0.1"):
        assert world.run(["busybox", "wget", "-qO-", f"http://{addr}:18090/"]).stdout.strip() == "hello-from-pd"
    assert "18090" in world.run(["nft", "list", "ruleset"]).stdout

    adds = [c for c in calls(tmp_path / "cni-log") if c["env"]["CNI_COMMAND"] == "ADD"]
    assert [c["rc"] for c in adds] == [0, 0]
    assert "K8S_POD_NAME=pa" in adds[0]["env"]["CNI_ARGS"]
    sent = json.loads(adds[0]["stdin"])["runtimeConfig"]
    assert sent["portMappings"] == [{"hostPort": 18090, "containerPort": 80, "protocol": "tcp"}]

    world.podman("rm", "-f", "-t", "0", "pa", "pb")
    dels = [c for c in calls(tmp_path / "cni-log") if c["env"]["CNI_COMMAND"] == "DEL"]
    assert len(dels) == 2 and all(c["rc"] == 0 for c in dels)
    assert all("prevResult" in json.loads(c["stdin"]) for c in dels)
    links = {link["ifname"] for link in world.links()}
    assert world.bridge not in links and not any(n.startswith("veth") for n in links)  # type: ignore[attr-defined]
    ruleset = world.run(["nft", "list", "ruleset"]).stdout
    assert "18090" not in ruleset and "10.80.0.0" not in ruleset
    ipam = tmp_path / "ipam" / NET
    assert [f.name for f in ipam.iterdir() if f.name[0].isdigit() or ":" in f.name] == []
