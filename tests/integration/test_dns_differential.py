"""burrow-dns against Debian's aardvark-dns 1.4 on the same config: the same queries from the
same sources to the same listen addresses, each server in its own throwaway namespace.

What must agree is what a container learns about containers:
- never a container address from a network the asker does not share (for a source that is no
  container: the network of the listen address asked), checked against the config itself,
  since 1.4 breaks it (a known container asking another network's gateway gets that
  network's names: its fallback path, spec §1.4/§2.1);
- every such address 1.4 gives within those bounds, burrow-dns gives too; for a lower-case
  name without the search domain, exactly those. Otherwise burrow-dns may give more: 1.4
  strips the search domain only on its fallback path and case-sensitively (bug 6 of spec
  §2.1), and that path (a source that is no container) matches names case-sensitively.
Forwarded names are not compared (1.4 answers single labels NXDOMAIN itself).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.rcode
import pytest

from tests.integration.test_dns_support import FakeUpstream, query
from tests.nsutil import VENV_BIN, Netns, need_root

pytestmark = pytest.mark.root

AARDVARK_14 = "/usr/lib/podman/aardvark-dns"
LA, LB, LC = "10.89.51.1", "10.89.52.1", "10.89.53.1"
C1, C1B, C2, C3, C4 = "10.89.51.2", "10.89.52.2", "10.89.51.3", "10.89.52.3", "10.89.53.2"
STRANGER, UP = "10.89.51.99", "10.89.59.1"
ID = "{:064x}".format
CONFIG = {
    "na": [LA, f"{ID(1)} {C1}  c1,web,Mixed.Case", f"{ID(2)} {C2}  c2,db,shared"],
    "nb": [LB, f"{ID(1)} {C1B}  c1,web2", f"{ID(3)} {C3}  c3,shared"],
    "nc": [LC, f"{ID(4)} {C4}  c4,x-y_z,api.example.test"],
}
NETS = {"na": {C1, C2}, "nb": {C1B, C3}, "nc": {C4}}
LISTEN = {LA: "na", LB: "nb", LC: "nc"}
MEMBER = {C1: {"na", "nb"}, C2: {"na"}, C3: {"nb"}, C4: {"nc"}}
NAMES = ["c1", "C1.", "c3", "c4", "web2", "shared", "mixed.case", "X-Y_Z.", "api.example.test",
         "c1.dns.podman", "c3.dns.podman.", "c4.dns.podman", "nope.dns.podman"]
PTRS = ["2.51.89.10.in-addr.arpa", "3.52.89.10.in-addr.arpa", "2.53.89.10.in-addr.arpa"]
SOURCES = [C1, C2, C3, C4, STRANGER]
ALL = {ip for ips in NETS.values() for ip in ips}


def _serve(binary: str, root: Path) -> dict[tuple[str, str, str, str], dns.message.Message]:
    ns = Netns()
    try:
        for ip in (LA, LB, LC, C1, C1B, C2, C3, C4, STRANGER, UP):
            ns.run(["ip", "addr", "add", f"{ip}/32", "dev", "lo"])
        cfg = root / "cfg"
        cfg.mkdir(parents=True)
        for name, lines in CONFIG.items():
            (cfg / name).write_text("\n".join(lines) + "\n")
        resolv = root / "resolv.conf"
        resolv.write_text(f"nameserver {UP}\n")
        ns.run(["mount", "--bind", str(resolv), "/etc/resolv.conf"])  # aardvark reads this
        up = FakeUpstream(ns, UP, "192.0.2.99")
        try:
            ns.run([binary, "--config", str(cfg), "-p", "53", "run"],
                   env={**os.environ, "BURROW_DNS_RESOLV_CONF": str(resolv)})
            time.sleep(0.3)  # 1.4 says it is ready before it binds
            out = {}
            for src, srv in itertools.product(SOURCES, LISTEN):
                for name, rdtype in [(n, "A") for n in NAMES] + [(p, "PTR") for p in PTRS]:
                    out[(src, srv, name, rdtype)] = query(ns, srv, name, rdtype, source=src,
                                                          timeout=2)
            return out
        finally:
            up.close()
    finally:
        ns.close()


@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[
        tuple[str, str, str, str], dns.message.Message]]]:
    need_root()
    if not os.access(AARDVARK_14, os.X_OK):
        pytest.skip("environment: needs Debian's aardvark-dns 1.4")
    root = tmp_path_factory.mktemp("dqdiff")
    yield {"burrow": _serve(str(VENV_BIN / "burrow-dns"), root / "burrow"),
           "aardvark": _serve(AARDVARK_14, root / "aardvark")}


def _seen(msg: dns.message.Message) -> set[str]:
    return {rd.to_text() for rrset in msg.answer for rd in rrset}


def _allowed(src: str, srv: str) -> set[str]:
    nets = MEMBER.get(src, {LISTEN[srv]})
    return set().union(*(NETS[n] for n in nets))


def test_a_records_agree_with_aardvark_14_within_the_askers_networks(
        answers: dict[str, dict[tuple[str, str, str, str], dns.message.Message]]) -> None:
    checked = 0
    for key, mine in answers["burrow"].items():
        src, srv, name, rdtype = key
        if rdtype != "A":
            continue
        ours, theirs = _seen(mine) & ALL, _seen(answers["aardvark"][key]) & ALL
        allowed = _allowed(src, srv)
        assert ours <= allowed, f"{key}: {ours - allowed} leaked"
        if name.lower().rstrip(".").endswith("dns.podman") or name != name.lower():
            assert theirs & allowed <= ours, key
        else:
            assert ours == theirs & allowed, key
        if ours:
            assert mine.rcode() == dns.rcode.NOERROR, key
            checked += 1
    assert checked > 40  # the comparison saw local answers, not only forwards


def test_ptr_agrees_with_aardvark_14_for_containers(
        answers: dict[str, dict[tuple[str, str, str, str], dns.message.Message]]) -> None:
    """For a container asking: the same names for an address it shares a network with (1.4's
    owner name is '.', a bug the comparison ignores), nothing local for one it does not."""
    for key, mine in answers["burrow"].items():
        src, srv, name, rdtype = key
        if rdtype != "PTR" or src == STRANGER:
            continue
        ip = ".".join(reversed(name.split(".")[:4]))
        ours = _seen(mine)
        if ip in _allowed(src, srv):
            assert ours and ours == _seen(answers["aardvark"][key]), key
        else:
            assert not ours, key
