"""EDNS versions against a real burrow-dns (RFC 6891 §6.1.3): a version other than 0 gets
BADVERS with an OPT of version 0, over UDP and TCP, also from the fast path's cache and for a
name that would be forwarded (never relayed); asking again with version 0, as dig does after
BADVERS, gets the answer; and glibc's resolver with `options edns0` (version 0, as Podman
containers' resolvers send it; musl sends no OPT) still resolves. aardvark-dns 1.4 answers a
version 1 query as a version 0 one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dns.message
import dns.rcode
import pytest

from tests.integration.test_dns_support import FakeUpstream, addrs, query, start_dns
from tests.nsutil import Netns, have

pytestmark = pytest.mark.root

GW, CTR, UP = "10.89.8.1", "10.89.8.10", "10.89.8.99"


@pytest.fixture
def served(netns_factory: Callable[[], Netns], tmp_path: Path) -> Netns:
    ns = netns_factory()
    for ip in (GW, CTR, UP):
        ns.run(["ip", "addr", "add", f"{ip}/32", "dev", "lo"])
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "dnb").write_text(f"{GW}\n{'a' * 64} {CTR}  web,www\n")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {UP}\n")
    start_dns(ns, cfg, {"BURROW_DNS_RESOLV_CONF": str(resolv)})
    return ns


def test_version_1_is_badvers_then_version_0_is_answered(served: Netns) -> None:
    up = FakeUpstream(served, UP, "192.0.2.7")
    try:
        for tcp in (False, True):
            for name in ("web", "web.dns.podman", "example.org"):
                for _ in range(2):  # the second from the reply cache
                    r = query(served, GW, name, source=CTR, tcp=tcp, use_edns=1, payload=1232)
                    assert r.rcode() == dns.rcode.BADVERS, (name, tcp, r)
                    assert r.edns == 0 and r.payload == 1232 and not r.answer
            assert addrs(query(served, GW, "web", source=CTR, tcp=tcp, use_edns=0)) == [CTR]
            assert addrs(query(served, GW, "example.org", source=CTR, tcp=tcp, use_edns=0)) == [
                "192.0.2.7"]
        # only the version 0 queries went upstream, one per transport
        assert sorted(t for t, _ in up.seen) == ["tcp", "udp"]
    finally:
        up.close()


@pytest.mark.parametrize("options", ["edns0", "edns0 use-vc"])
def test_glibc_resolver_with_edns0_still_resolves(served: Netns, tmp_path: Path,
                                                  options: str) -> None:
    if not have("getent"):
        pytest.skip("environment: needs getent")
    resolv = tmp_path / "ctr-resolv.conf"
    resolv.write_text(f"nameserver {GW}\noptions {options} attempts:1 timeout:2\n")
    served.run(["mount", "--bind", str(resolv), "/etc/resolv.conf"])
    res = served.run(["getent", "ahostsv4", "www.dns.podman"], check=False)
    assert res.returncode == 0 and CTR in res.stdout, res
