"""burrow-cni's address allocation against the reference host-local plugin, side by side.

The same ADD/DEL sequence goes to CNI's own `host-local` binary (containernetworking-plugins,
run as an IPAM plugin on its own data dir) and to netns/cni/hostlocal.py (as the CNI front door
calls it: an owner known to hold nothing). After every step both must have handed out the
same addresses, or both refused, and their data dirs must hold the same files with the same
bytes (one file per address, `<id>\\r\\n<ifname>`; `last_reserved_ip.N`), so host-local's
tools and a switch between the two keep working. The sequence fills a small range, frees
addresses behind and ahead of the last one reserved, and wraps around.

And an allocation reads no allocation file but the ones it makes: it finds a free address by
name, as host-local does, not by reading every file (a CNI node with N containers paid N
reads per ADD).
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from netns.cni import config as C
from netns.cni import hostlocal
from netns.cni.errors import CniError

REFERENCE = Path("/usr/lib/cni/host-local")
NET = "trhl"
RANGES = [[{"subnet": "10.99.0.0/29"}], [{"subnet": "fd99::/125"}]]  # 5 and 6 free addresses


def _reference(data: Path, command: str, cid: str, ip: str = "") -> list[str] | None:
    """The reference plugin's addresses for an ADD (None if it refused), [] for a DEL."""
    conf = {"cniVersion": "0.4.0", "name": NET, "type": "bridge",
            "ipam": {"type": "host-local", "ranges": RANGES, "dataDir": str(data)}}
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": "/proc/self/ns/net",
           "CNI_IFNAME": "eth0", "CNI_PATH": str(REFERENCE.parent), "PATH": os.environ["PATH"],
           **({"CNI_ARGS": f"IP={ip}"} if ip else {})}
    res = subprocess.run([str(REFERENCE)], input=json.dumps(conf), env=env, capture_output=True,
                         text=True, timeout=30)
    if res.returncode != 0:
        assert command == "ADD", res.stdout + res.stderr
        return None
    if command != "ADD":
        return []
    return [ip["address"].split("/")[0] for ip in json.loads(res.stdout)["ips"]]


def _burrow(store: hostlocal.Store, command: str, cid: str,
            records: dict[str, tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]] | None,
            ip: str = "") -> list[str] | None:
    """As netns/cni/plugin.py does it. `records`: what the attachment records say the ADDs
    reserved, which DEL checks and releases (None: no record, DEL reads every file)."""
    sets = C.parse_range_sets({"ranges": RANGES})
    owner = (cid, "eth0")
    with store.locked():
        if command == "DEL":
            known = records.pop(cid, None) if records is not None else None
            held = store.owned(*owner) if known is None else store.holds(owner, known)
            store.release(store.holds(owner, held))
            return []
        try:
            wanted = (ipaddress.ip_address(ip),) if ip else ()
            ips, _ = hostlocal.allocate(store, sets, owner, wanted, may_hold=False)
        except CniError:
            return None
    if records is not None:
        records[cid] = ips
    return [str(ip) for ip in ips]


def _files(d: Path) -> dict[str, bytes]:
    """The data dir as host-local sees it (the lock file is only a lock to both)."""
    return {p.name: b"" if p.name == "lock" else p.read_bytes()
            for p in sorted(d.iterdir()) if p.is_file()}


# ADD c1..c6 (c6: v4 full, refused by both), free one behind and one ahead of the last
# reserved, add again (no reuse of a freed address until the search wraps), fill, wrap.
STEPS = [("ADD", f"c{i}") for i in range(1, 7)] + [
    ("DEL", "c2"), ("ADD", "c7"), ("DEL", "c5"), ("DEL", "c4"), ("ADD", "c8"), ("ADD", "c9"),
    ("ADD", "c10"), ("DEL", "c1"), ("DEL", "c9"), ("ADD", "c11"), ("ADD", "c12"),
    ("ADD", "c13"), ("DEL", "c12"), ("DEL", "c13"), ("DEL", "c3"),
    # A requested address moves where the next search starts (host-local's store writes
    # last_reserved_ip.N with every reservation): c15 gets .5, not .2.
    ("ADD", "c14", "10.99.0.4"), ("ADD", "c15"),
]


@pytest.mark.skipif(not REFERENCE.exists(),
                    reason="environment: no reference host-local (containernetworking-plugins)")
@pytest.mark.parametrize("del_from", ["record", "scan"])
def test_same_addresses_and_same_files_as_host_local(tmp_path: Path, del_from: str) -> None:
    """DEL from the attachment record's addresses (as burrow-cni's DEL does) and from a scan
    of every file (a record from an older burrow, or none): the same files either way."""
    ref_dir, ours_dir = tmp_path / "ref", tmp_path / "ours"
    store = hostlocal.Store(str(ours_dir), NET)
    records: dict[str, tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]] | None = (
        {} if del_from == "record" else None)
    for n, (command, cid, *ip) in enumerate(STEPS):
        want = _reference(ref_dir, command, cid, *ip)
        got = _burrow(store, command, cid, records, *ip)
        assert got == want, f"step {n} {command} {cid}"
        assert _files(ours_dir / NET) == _files(ref_dir / NET), f"step {n} {command} {cid}"


AUDIT = """
import sys
from pathlib import Path
from netns.cni import config as C, hostlocal
d = Path(sys.argv[1]); n = int(sys.argv[2])
store = hostlocal.Store(str(d), "big")
sets = C.parse_range_sets({"ranges": [[{"subnet": "10.98.0.0/16"}]]})
with store.locked():
    for i in range(n):
        hostlocal.allocate(store, sets, (f"c{i}", "eth0"), (), may_hold=False)
opened = []
sys.addaudithook(lambda ev, args: opened.append(str(args[0])) if ev == "open" and
                 str(args[0]).startswith(str(d / "big")) else None)
with store.locked():
    hostlocal.allocate(store, sets, ("new", "eth0"), (), may_hold=False)
print(len(opened))
"""


@pytest.mark.parametrize("n", [5, 400])
def test_an_allocation_opens_the_same_few_files_whatever_the_number_held(
        tmp_path: Path, n: int) -> None:
    """Every open() of the ADD under the data dir, counted by an audit hook in a fresh
    interpreter: the lock, last_reserved_ip.0 (read, then its replacement), the new
    address's file. Before, an ADD read every allocation file: 400 more opens here."""
    res = subprocess.run([sys.executable, "-c", AUDIT, str(tmp_path), str(n)],
                         capture_output=True, text=True, timeout=120, check=True)
    assert int(res.stdout) <= 5, res.stdout


def test_a_requested_address_held_by_another_names_its_owner(tmp_path: Path) -> None:
    store = hostlocal.Store(str(tmp_path), NET)
    sets = C.parse_range_sets({"ranges": RANGES})
    ip = ipaddress.ip_address("10.99.0.4")
    with store.locked():
        hostlocal.allocate(store, sets, ("holder", "eth0"), (ip,), may_hold=False)
        with pytest.raises(CniError, match="already allocated to container holder"):
            hostlocal.allocate(store, sets, ("other", "eth0"), (ip,), may_hold=False)
