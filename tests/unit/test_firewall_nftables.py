"""nftables plans in Netavark 2.x's layout: what a setup adds, what a teardown deletes.

Rule for rule against the kernel (and a hand-made netavark 2.x ruleset that must survive):
tests/integration/test_firewall_ruleset.py. These are the batches, without root.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from ipaddress import IPv4Address, ip_network
from pathlib import Path
from typing import Any

import pytest

from netns.errors import BurrowError
from netns.firewall import nftables as nft
from netns.firewall import rules, select
from netns.firewall.runner import ExecResult
from netns.firewall.types import PortFw
from tests.unit.test_firewall_rules import net, pf, pm

SUB4 = "nv_3f0c5d8a_10_89_7_0_nm24"


def batch(nets: Any, ports: Any, have: Any, fresh: frozenset[str] = frozenset()) -> list[Any]:
    b = nft.Batch("netavark")
    nft.plan_setup(b, nets, list(rules.build(nets, ports).ports), have, fresh)
    return b.cmds


def added(cmds: list[Any], chain: str | None = None) -> list[list[Any]]:
    return [c[v]["rule"]["expr"] for c in cmds for v in ("add", "insert")
            if v in c and "rule" in c[v] and (chain is None or c[v]["rule"]["chain"] == chain)]


def verbs(cmds: list[Any]) -> set[str]:
    return {next(iter(c)) for c in cmds}


def test_subnet_chain_names() -> None:
    assert nft.subnet_chain("53ce4390aaaa", ip_network("10.88.0.0/16")) == (
        "nv_53ce4390_10_88_0_0_nm16")
    assert nft.subnet_chain("53ce4390", ip_network("fd10:89:7::/64"), True) == (
        "nv_53ce4390_fd10-89-7--_nm64_dnat")


def test_first_setup_never_flushes_or_deletes_and_is_guarded() -> None:
    cmds = batch([net(dns_port=10053)], [pf(pm())], nft.NftLedger())
    assert verbs(cmds) <= {"add", "insert", "create"}  # no flush, no delete, ever
    creates = [c["create"]["chain"]["name"] for c in cmds if "create" in c]
    # The guards: base rules travel with SETMARK's `create`, a network's with its chains'.
    assert creates == ["NETAVARK-HOSTPORT-SETMARK", SUB4, "nv_3f0c5d8a_fd10-89-7--_nm64"]
    chains = [c["add"]["chain"]["name"] for c in cmds if "chain" in c.get("add", {})]
    assert chains[:5] == ["INPUT", "FORWARD", "POSTROUTING", "PREROUTING", "OUTPUT"]
    base = [c["add"]["chain"] for c in cmds if "chain" in c.get("add", {})][:5]
    assert [b["prio"] for b in base] == [0, 0, 100, -100, -100]


def test_base_and_subnet_rule_order() -> None:
    cmds = batch([net(dual=False)], [], nft.NftLedger())
    post = added(cmds, "POSTROUTING")
    assert post[0] == [
        {"match": {"op": "==", "left": {"&": [{"meta": {"key": "mark"}}, 0x2000]},
                   "right": 0x2000}}, {"masquerade": None}]
    assert post[1][-1] == {"jump": {"target": SUB4}}
    fwd = added(cmds, "FORWARD")
    assert fwd[0][-1] == {"drop": None}
    assert fwd[1][0]["match"]["left"] == {"&": [{"ct": {"key": "mark"}}, 0x1000]}
    assert fwd[2] == [{"jump": {"target": "NETAVARK-ISOLATION-1"}}]
    assert fwd[3][1]["match"]["right"] == ["established", "related"]
    sub = added(cmds, SUB4)
    assert sub[1][0]["match"]["op"] == "!=" and sub[1][-1] == {"masquerade": None}


def test_isolation_modes() -> None:
    nets = [net("true", name="a", bridge="bra", nid="aaaaaaaa"),
            net("strict", name="b", bridge="brb", nid="bbbbbbbb"),
            net("false", name="c", bridge="brc", nid="cccccccc")]
    cmds = batch(nets, [], nft.NftLedger())
    iso1 = [r[-1]["jump"]["target"] for r in added(cmds, "NETAVARK-ISOLATION-1")]
    assert iso1 == ["NETAVARK-ISOLATION-2", "NETAVARK-ISOLATION-3"]
    assert [r[0]["match"]["right"] for r in added(cmds, "NETAVARK-ISOLATION-2")] == ["bra", "brb"]
    iso3 = [c for c in cmds if "insert" in c]
    assert iso3 == [{"insert": {"rule": {"family": "inet", "table": "netavark",
                    "chain": "NETAVARK-ISOLATION-3", "expr": [{"match": {"op": "==", "left": {
                        "meta": {"key": "oifname"}}, "right": "brc"}}, {"drop": None}]}}}]


def test_port_forward_rules_v4_and_v6() -> None:
    cmds = batch([net(dns_port=10053)], [pf(pm())], nft.NftLedger())
    dns = [c["insert"]["rule"]["expr"] for c in cmds
           if c.get("insert", {}).get("rule", {}).get("chain") == "NETAVARK-HOSTPORT-DNAT"]
    # DNS redirects are inserted first in the DNAT chain, one per gateway (as Netavark).
    assert [d[-1] for d in dns] == [{"dnat": {"addr": "10.89.7.1", "family": "ip", "port": 10053}},
                                    {"dnat": {"addr": "fd10:89:7::1", "family": "ip6", "port": 10053}}]
    jumps = added(cmds, "NETAVARK-HOSTPORT-DNAT")
    assert [r[-1] for r in jumps if "jump" in r[-1]] == [
        {"jump": {"target": f"{SUB4}_dnat"}}, {"jump": {"target": "nv_3f0c5d8a_fd10-89-7--_nm64_dnat"}}]
    v4 = added(cmds, f"{SUB4}_dnat")
    assert [r[-1] for r in v4] == [
        {"jump": {"target": "NETAVARK-HOSTPORT-SETMARK"}},
        {"jump": {"target": "NETAVARK-HOSTPORT-SETMARK"}},
        {"dnat": {"addr": "10.89.7.2", "family": "ip", "port": 80}}]
    assert v4[1][0]["match"]["right"] == {"prefix": {"addr": "127.0.0.1", "len": 32}}
    v6 = added(cmds, "nv_3f0c5d8a_fd10-89-7--_nm64_dnat")
    assert len(v6) == 2  # Netavark 2.x marks localhost for IPv4 only
    assert v6[1][-1] == {"dnat": {"addr": "fd10:89:7::2", "family": "ip6", "port": 80}}


def test_range_host_ip_and_sctp() -> None:
    cmds = batch([net()], [pf(pm(8000, 9000, "sctp", "10.0.0.5", rng=3))], nft.NftLedger())
    (jump,) = [r for r in added(cmds, "NETAVARK-HOSTPORT-DNAT")]
    assert jump[:2] == [
        {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                   "right": "10.0.0.5"}},
        {"match": {"op": "==", "left": {"payload": {"protocol": "sctp", "field": "dport"}},
                   "right": {"range": [8000, 8002]}}}]
    chain = added(cmds, f"{SUB4}_dnat")
    assert [(r[1]["match"]["right"], r[-1]["dnat"]["port"]) for r in chain[2:]] == [
        (8000, 9000), (8001, 9001), (8002, 9002)]


def test_a_known_network_adds_only_the_containers_rules() -> None:
    led = nft.NftLedger(True, {net().id: "nabr1"})
    cmds = batch([net()], [pf(pm())], led)
    assert not [c for c in cmds if "create" in c]
    assert {c["add"]["rule"]["chain"] for c in cmds if "rule" in c.get("add", {})} == {
        "NETAVARK-HOSTPORT-DNAT", f"{SUB4}_dnat", "nv_3f0c5d8a_fd10-89-7--_nm64_dnat"}
    # ...unless its bridge was just made: then its rules went with the last teardown.
    assert SUB4 in json.dumps(batch([net()], [], led, frozenset({"nabr1"})))


def listing(*rules_: tuple[str, int, list[Any]], chains: Sequence[str] = ()) -> nft.Listed:
    out = nft.Listed(set(chains))
    for chain, handle, expr in rules_:
        out.chains.add(chain)
        out.rules.setdefault(chain, []).append((handle, expr))
    return out


def test_teardown_deletes_by_handle_only_what_matches() -> None:
    """The rules are found in the listed table by what they match, as Netavark finds them."""
    b = nft.Batch("netavark")
    setup = batch([net(dual=False)], [pf(pm(), network=net(dual=False), v6=False)],
                  nft.NftLedger(True, {}))
    other = pf(pm(9090), network=net(dual=False), v6=False)
    other_rules = added(batch([net(dual=False)], [other], nft.NftLedger(True, {})))
    table = listing(*[(c["add"]["rule"]["chain"], 100 + i, c["add"]["rule"]["expr"])
                      for i, c in enumerate(setup) if "rule" in c.get("add", {})])
    for i, expr in enumerate(other_rules[-4:]):
        chain = "NETAVARK-HOSTPORT-DNAT" if i == 0 else f"{SUB4}_dnat"
        table.rules.setdefault(chain, []).append((500 + i, expr))
    nft.plan_teardown(b, [], list(rules.build([], [pf(pm(), network=net(dual=False), v6=False)]
                                              ).ports), table)
    gone = {c["delete"]["rule"]["handle"] for c in b.cmds}
    kept = {h for rs in table.rules.values() for h, e in rs if h not in gone}
    assert len(gone) == 4 and not gone & {500, 501, 502, 503}
    assert all("9090" in json.dumps(e) for rs in table.rules.values() for h, e in rs
               if h in kept and "dport" in json.dumps(e) and "53" not in json.dumps(e))


def test_teardown_of_a_container_that_never_got_the_port_leaves_its_owners_rules() -> None:
    """Podman tears down a run that failed before setup (port already in use): that request
    names the same host port as the container that holds it, and must not take its rules."""
    owner = pf(pm(), network=net(dual=False), v6=False)
    setup = batch([net(dual=False)], [owner], nft.NftLedger(True, {}))
    table = listing(*[(c["add"]["rule"]["chain"], 100 + i, c["add"]["rule"]["expr"])
                      for i, c in enumerate(setup) if "rule" in c.get("add", {})])
    failed = PortFw("f" * 64, net(dual=False), IPv4Address("10.89.7.3"), None, (pm(),))
    b = nft.Batch("netavark")
    nft.plan_teardown(b, [], list(rules.build([], [failed]).ports), table)
    assert b.cmds == []
    nft.plan_teardown(b, [], list(rules.build([], [owner]).ports), table)
    assert len(b.cmds) == 4  # the owner's own teardown still finds all four
    # The failed run did get as far as its setup: its copies go, the owner's stay.
    dup = batch([net(dual=False)], [failed], nft.NftLedger(True, {}))
    port_chains = ("NETAVARK-HOSTPORT-DNAT", f"{SUB4}_dnat")
    for i, c in enumerate(c for c in dup if c.get("add", {}).get("rule", {}).get("chain") in port_chains):
        table.rules.setdefault(c["add"]["rule"]["chain"], []).append((300 + i, c["add"]["rule"]["expr"]))
    b = nft.Batch("netavark")
    nft.plan_teardown(b, [], list(rules.build([], [failed]).ports), table)
    assert sorted(c["delete"]["rule"]["handle"] for c in b.cmds) == [300, 301, 302, 303]


class Fake:
    def __init__(self, listed: str = "", rc: list[int] | None = None) -> None:
        self.calls: list[str] = []
        self.listed = listed
        self.rc = list(rc or [])

    def __call__(self, argv: Sequence[str], stdin: str) -> ExecResult:
        self.calls.append(stdin)
        if '"list"' in stdin:
            return ExecResult(0, self.listed, "")
        rc = self.rc.pop(0) if self.rc else 0
        echo = '{"nftables":[{"add":{"table":{"family":"inet","name":"netavark","handle":7}}}]}'
        return ExecResult(rc, "" if rc else echo,
                          "Error: Could not process rule: File exists\n" if rc else "")


def test_backend_setup_is_one_exec_and_falls_back_to_a_listing(tmp_path: Path) -> None:
    run = Fake(rc=[0, 1, 0])
    fw = select("nftables", tmp_path, {}, runner=run)
    fw.setup([net()], [pf(pm())], fresh=["nabr1"])
    assert len(run.calls) == 1 and '"list"' not in run.calls[0]
    other = net(name="other", bridge="br2", nid="22222222")
    fw.setup([other], [])  # the ledger's batch fails (someone made it): list, then apply
    assert ['"list"' in c for c in run.calls[1:]] == [False, True, False]


def test_failing_nft_fails_setup_with_nfts_message(tmp_path: Path) -> None:
    run = Fake(rc=[1, 1])
    with pytest.raises(BurrowError) as err:
        select("nftables", tmp_path, {}, runner=run).setup([net()], [pf(pm())])
    assert str(err.value) == ("firewall (nftables): apply batch: Error: Could not process rule: "
                              "File exists")
    assert not (tmp_path / "firewall/networks").exists()
