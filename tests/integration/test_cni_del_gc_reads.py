"""burrow-cni DEL and GC find addresses without reading every allocation file.

DEL reads the files of the addresses its ADD's attachment record names (netns/cni/plugin.py),
not every file of the network; GC reads every file once, not once per stale owner. Counted by
an audit hook on open() in the interpreter that runs the real CNI call (plugin.run, as the
burrow-cni executable runs it), inside the test's own host netns, next to many allocations
of other owners (files as host-local writes them). The data dirs stay host-local's: see
tests/integration/test_cni_hostlocal_reference.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from netns import statefiles
from tests.cni_util import BASE_ENV, PLUGIN, CniWorld, cid
from tests.nsutil import VENV_BIN, Netns

pytestmark = pytest.mark.root

# One CNI call in this interpreter: its reply, and how many allocation files it opened.
AUDIT = """
import ipaddress, json, os, sys
from netns.cni import plugin
d = sys.argv[1]
opened = []
def hook(ev, args):
    if ev == "open" and isinstance(args[0], str) and os.path.dirname(args[0]) == d:
        try:
            ipaddress.ip_address(os.path.basename(args[0]))
        except ValueError:
            return
        opened.append(args[0])
sys.addaudithook(hook)
out, code = plugin.run(dict(os.environ), sys.stdin.buffer.read())
print(json.dumps({"out": out, "code": code, "opened": len(opened)}))
"""


@pytest.fixture
def world(netns_factory: Callable[[], Netns], tmp_path: Path) -> Iterator[CniWorld]:
    if not PLUGIN.exists():
        pytest.skip("environment: burrow-cni is not installed (run scripts/install)")
    yield CniWorld(netns_factory(), tmp_path)


def audited(world: CniWorld, command: str, conf: dict[str, Any], *, cid: str = "",
            netns: str = "") -> dict[str, Any]:
    env = {**BASE_ENV, "CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": netns,
           "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni"}
    env = {k: v for k, v in env.items() if v}
    res = world.host.run(["env", "-i", *(f"{k}={v}" for k, v in env.items()),
                          str(VENV_BIN / "python"), "-c", AUDIT, str(world.data_dir / world.name)],
                         input=json.dumps(conf))
    out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def others(world: CniWorld, n: int) -> dict[str, str]:
    """n allocations of n other containers (ids only: none has a netns, a record or a rule),
    written as host-local writes them."""
    d = world.data_dir / world.name
    made = {}
    for i in range(n):
        owner = f"{i:064x}"
        (d / f"fd77::{0x1000 + i:x}").write_bytes(f"{owner}\r\neth0".encode())
        made[f"fd77::{0x1000 + i:x}"] = owner
    return made


def test_del_reads_only_the_files_of_its_own_addresses(
        world: CniWorld, netns_factory: Callable[[], Netns]) -> None:
    ctr = netns_factory()
    conf, c = world.conf(), cid()
    world.add(ctr, conf, c)
    rec = world.state_dir / statefiles.CNI_ATTACHMENTS_DIR / world.name / f"{c}_eth0.json"
    assert json.loads(rec.read_text())["ips"] == ["10.77.0.2", "fd77::2"]  # what ADD reserved
    made = others(world, 300)
    r = audited(world, "DEL", conf, cid=c, netns=ctr.path)
    assert (r["code"], r["out"]) == (0, ""), r
    # Its two addresses, each read to check the owner when found and again when released.
    # Scanning read all 302.
    assert r["opened"] <= 4, r
    held = world.held()
    assert "10.77.0.2" not in held and "fd77::2" not in held
    assert {ip: line.split("\r\n")[0] for ip, line in held.items()} == made


def test_gc_reads_every_file_once_not_once_per_stale_owner(
        world: CniWorld, netns_factory: Callable[[], Netns]) -> None:
    ctr = netns_factory()
    keep = cid()
    world.add(ctr, world.conf(), keep)
    stale = 30
    others(world, stale)
    files = len(world.held())  # 2 + 30
    conf = world.conf("1.1.0", **{"cni.dev/valid-attachments": [{"containerID": keep,
                                                                  "ifname": "eth0"}]})
    r = audited(world, "GC", conf)
    assert (r["code"], r["out"]) == (0, ""), r
    assert set(world.held()) == {"10.77.0.2", "fd77::2"}
    # One scan, then each stale owner's file when found and when released. A scan per
    # stale owner read 32 + 31 + ... files: 557 here.
    assert r["opened"] <= files + 2 * stale, r


def test_del_with_a_record_that_names_no_address_reads_every_file(
        world: CniWorld, netns_factory: Callable[[], Netns]) -> None:
    """A record written before its ADD knew its addresses (the ADD died in between) or by an
    older burrow: DEL falls back to reading every file, as host-local does, and releases."""
    ctr = netns_factory()
    conf, c = world.conf(), cid()
    world.add(ctr, conf, c)
    rec = world.state_dir / statefiles.CNI_ATTACHMENTS_DIR / world.name / f"{c}_eth0.json"
    data = json.loads(rec.read_text())
    del data["ips"]
    rec.write_text(json.dumps(data))
    made = others(world, 20)
    r = audited(world, "DEL", conf, cid=c, netns=ctr.path)
    assert (r["code"], r["out"]) == (0, ""), r
    assert r["opened"] >= 22, r
    assert {ip: line.split("\r\n")[0] for ip, line in world.held().items()} == made
    assert not rec.exists()


def test_check_reads_only_the_files_of_its_own_addresses(
        world: CniWorld, netns_factory: Callable[[], Netns]) -> None:
    """CHECK finds the container's held addresses as DEL does; it used to read all 302."""
    ctr = netns_factory()
    conf, c = world.conf(), cid()
    prev = world.add(ctr, conf, c)
    others(world, 300)
    r = audited(world, "CHECK", {**conf, "prevResult": prev}, cid=c, netns=ctr.path)
    assert (r["code"], r["out"]) == (0, ""), r
    assert r["opened"] <= 2, r
    # Released behind its back: CHECK still says so (the record names the addresses).
    (world.data_dir / world.name / "10.77.0.2").unlink()
    r = audited(world, "CHECK", {**conf, "prevResult": prev}, cid=c, netns=ctr.path)
    assert r["code"] == 1 and "no longer reserved" in r["out"], r
