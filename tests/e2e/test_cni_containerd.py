"""containerd (Debian's 1.6, `ctr run --cni`) runs containers through burrow-cni.

What ctr can and cannot ask of a CNI plugin shapes the checks: ctr's `--cni` sends ADD after
the task starts and, for a foreground run, DEL (with an empty CNI_NETNS) once the task exits;
it has no flag for port mappings, so the published-port check for containerd is not possible
through ctr (the conformance tests and the Podman test cover portMappings).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cni_env import ContainerdWorld, calls, containerd_problem
from tests.nsutil import VENV_BIN, unique

pytestmark = [pytest.mark.e2e, pytest.mark.root]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[ContainerdWorld]:
    problem = containerd_problem()
    if problem:
        pytest.skip(problem)
    bridge = unique("bn-cd")
    conflist: dict[str, Any] = {
        "cniVersion": "1.0.0", "name": "bn-containerd",
        "plugins": [{
            "type": "burrow-cni", "bridge": bridge, "isGateway": True, "ipMasq": True,
            "dnsNames": True, "dnsBinary": str(VENV_BIN / "burrow-dns"),
            "stateDir": str(tmp_path / "cni-state"),
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.79.0.0/24"}], [{"subnet": "fd79::/64"}]],
                     "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(tmp_path / "ipam")},
            "capabilities": {"portMappings": True},
        }],
    }  # fmt: skip
    w = ContainerdWorld(tmp_path, conflist)
    w.bridge = bridge  # type: ignore[attr-defined]
    yield w
    w.close()


def addresses(ipam: Path) -> dict[str, str]:
    """address -> container id, from burrow-cni's host-local-style files."""
    d = ipam / "bn-containerd"
    out = {}
    for f in d.iterdir() if d.exists() else ():
        if f.name[0].isdigit() or ":" in f.name:
            out[f.name] = f.read_bytes().decode().split("\r\n")[0]
    return out


def test_two_containers_reach_each_other_and_del_leaves_nothing(world: ContainerdWorld) -> None:
    base = world.base
    a = world.run_foreground("bn-a", "httpd", "-f", "-p", "8080", "-h", "/www")
    b = world.run_foreground("bn-b", "sleep", "600")
    world.wait_running("bn-a", a)
    world.wait_running("bn-b", b)
    held = addresses(base / "ipam")
    by_owner = {cid: ip for ip, cid in held.items() if "." in ip}
    assert set(by_owner) == {"bn-bn-a", "bn-bn-b"}, held  # ctr's container ids: <namespace>-<name>
    ip_a = by_owner["bn-bn-a"]
    adds = [c for c in calls(world.logdir) if c["env"]["CNI_COMMAND"] == "ADD"]
    assert len(adds) == 2 and all(c["rc"] == 0 for c in adds)
    assert {json.loads(c["stdout"])["ips"][0]["address"].split("/")[0] for c in adds} == set(by_owner.values())

    # b reaches a over the bridge (busybox wget inside the container), and by DNS name.
    assert world.exec("bn-b", "wget", "-qO-", f"http://{ip_a}:8080/").stdout.strip() == "hello-from-pd"
    lookup = world.exec("bn-b", "nslookup", "bn-bn-a", "10.79.0.1").stdout
    assert ip_a in lookup, lookup
    # And the node (containerd's netns) reaches a through its bridge.
    assert world.ns.run(["busybox", "wget", "-qO-", f"http://{ip_a}:8080/"]).stdout.strip() == "hello-from-pd"

    # `ctr task kill` ends the task; the foreground ctr then sends DEL; `ctr container rm` removes it.
    for name, proc in (("bn-a", a), ("bn-b", b)):
        world.ctr("task", "kill", "-s", "KILL", name)
        proc.wait(timeout=60)
        world.ctr("container", "rm", name)
    dels = [c for c in calls(world.logdir) if c["env"]["CNI_COMMAND"] == "DEL"]
    assert len(dels) == 2 and all(c["rc"] == 0 and c["stdout"] == "" for c in dels), dels
    assert addresses(base / "ipam") == {}
    assert list((base / "cni-state" / "cni-attachments" / "bn-containerd").iterdir()) == []
    links = {link["ifname"] for link in world.ns.links()}
    assert not any(n.startswith("veth") for n in links), links
    assert world.bridge not in links  # type: ignore[attr-defined]
    assert "10.79.0.0" not in world.ns.run(["nft", "list", "ruleset"]).stdout
    assert world.ctr("container", "ls", "-q").stdout.strip() == ""
