"""nftables render transcripts: one JSON batch, Netavark's layout, rule order."""

from __future__ import annotations

import json
from ipaddress import ip_network
from typing import Any

from netns.firewall import nftables as nft
from netns.firewall import rules
from netns.firewall.runner import ExecResult
from tests.unit.test_firewall_rules import net, pf, pm

T = {"family": "inet", "name": "netavark"}


def chains(batch: dict[str, Any]) -> list[str]:
    return [c["add"]["chain"]["name"] for c in batch["nftables"] if "chain" in c.get("add", {})]


def rules_of(batch: dict[str, Any], chain: str) -> list[list[Any]]:
    return [c["add"]["rule"]["expr"] for c in batch["nftables"]
            if "rule" in c.get("add", {}) and c["add"]["rule"]["chain"] == chain]


def test_subnet_chain_names() -> None:
    assert nft.subnet_chain("53ce4390aaaa", ip_network("10.88.0.0/16")) == (
        "nv_53ce4390_10_88_0_0_nm16")
    assert nft.subnet_chain("53ce4390", ip_network("fd10:89:7::/64"), True) == (
        "nv_53ce4390_fd10-89-7--_nm64_dnat")


def test_empty_ruleset_only_removes_the_table() -> None:
    assert nft.render(rules.Ruleset()) == {"nftables": [{"add": {"table": T}},
                                                        {"delete": {"table": T}}]}


def test_batch_recreates_table_and_layout() -> None:
    batch = nft.render(rules.build([net(dns_port=10053)], [pf(pm())]))
    cmds = batch["nftables"]
    assert cmds[:3] == [{"add": {"table": T}}, {"delete": {"table": T}}, {"add": {"table": T}}]
    assert chains(batch) == [
        "INPUT", "FORWARD", "POSTROUTING", "PREROUTING", "OUTPUT",
        "NETAVARK-HOSTPORT-DNAT", "NETAVARK-HOSTPORT-SETMARK",
        "NETAVARK-ISOLATION-1", "NETAVARK-ISOLATION-2", "NETAVARK-ISOLATION-3",
        "nv_3f0c5d8a_10_89_7_0_nm24", "nv_3f0c5d8a_fd10-89-7--_nm64",
        "nv_3f0c5d8a_10_89_7_0_nm24_dnat", "nv_3f0c5d8a_fd10-89-7--_nm64_dnat",
    ]
    base = [c["add"]["chain"] for c in cmds if "chain" in c.get("add", {})][:5]
    assert base[2] == {"family": "inet", "table": "netavark", "name": "POSTROUTING",
                       "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}
    assert [b["prio"] for b in base] == [0, 0, 100, -100, -100]


def test_postrouting_and_forward_order() -> None:
    batch = nft.render(rules.build([net(dual=False)], []))
    post = rules_of(batch, "POSTROUTING")
    assert post[0] == [
        {"match": {"op": "==", "left": {"&": [{"meta": {"key": "mark"}}, 0x2000]},
                   "right": 0x2000}}, {"masquerade": None}]
    assert post[1][-1] == {"jump": {"target": "nv_3f0c5d8a_10_89_7_0_nm24"}}
    fwd = rules_of(batch, "FORWARD")
    assert fwd[0][-1] == {"drop": None}
    assert fwd[1][0]["match"]["left"] == {"&": [{"ct": {"key": "mark"}}, 0x1000]}
    assert fwd[2] == [{"jump": {"target": "NETAVARK-ISOLATION-1"}}]
    assert fwd[3][1]["match"]["right"] == ["established", "related"]
    assert fwd[4] == [{"match": {"op": "==", "left": {"payload": {"protocol": "ip",
                      "field": "saddr"}}, "right": {"prefix": {"addr": "10.89.7.0", "len": 24}}}},
                      {"accept": None}]
    sub = rules_of(batch, "nv_3f0c5d8a_10_89_7_0_nm24")
    assert sub[1][0]["match"] == {"op": "!=", "left": {"payload": {"protocol": "ip",
                                  "field": "daddr"}}, "right": {"prefix": {"addr": "224.0.0.0",
                                  "len": 4}}}


def test_isolation_modes() -> None:
    nets = [net("true", name="a", bridge="bra", nid="aaaaaaaa"),
            net("strict", name="b", bridge="brb", nid="bbbbbbbb"),
            net("false", name="c", bridge="brc", nid="cccccccc")]
    batch = nft.render(rules.build(nets, []))
    iso1 = [r[-1]["jump"]["target"] for r in rules_of(batch, "NETAVARK-ISOLATION-1")]
    assert iso1 == ["NETAVARK-ISOLATION-2", "NETAVARK-ISOLATION-3"]
    iso2 = [r[0]["match"]["right"] for r in rules_of(batch, "NETAVARK-ISOLATION-2")]
    assert iso2 == ["bra", "brb"]
    iso3 = rules_of(batch, "NETAVARK-ISOLATION-3")
    assert iso3 == [[{"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "brc"}},
                     {"drop": None}], [{"jump": {"target": "NETAVARK-ISOLATION-2"}}]]


def test_port_forward_rules_v4_and_v6() -> None:
    batch = nft.render(rules.build([net(dns_port=10053)], [pf(pm())]))
    dnat = rules_of(batch, "NETAVARK-HOSTPORT-DNAT")
    # DNS redirects first, then one jump per family.
    assert dnat[0][-1] == {"dnat": {"addr": "10.89.7.1", "family": "ip", "port": 10053}}
    assert dnat[1][-1] == {"dnat": {"addr": "fd10:89:7::1", "family": "ip6", "port": 10053}}
    assert dnat[0][1:3] == [
        {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}},
                   "right": {"set": ["udp", "tcp"]}}},
        {"match": {"op": "==", "left": {"payload": {"protocol": "th", "field": "dport"}},
                   "right": 53}}]
    assert [r[-1]["jump"]["target"] for r in dnat[2:]] == [
        "nv_3f0c5d8a_10_89_7_0_nm24_dnat", "nv_3f0c5d8a_fd10-89-7--_nm64_dnat"]
    v4 = rules_of(batch, "nv_3f0c5d8a_10_89_7_0_nm24_dnat")
    assert [r[-1] for r in v4] == [
        {"jump": {"target": "NETAVARK-HOSTPORT-SETMARK"}},
        {"jump": {"target": "NETAVARK-HOSTPORT-SETMARK"}},
        {"dnat": {"addr": "10.89.7.2", "family": "ip", "port": 80}}]
    assert v4[1][0]["match"]["right"] == {"prefix": {"addr": "127.0.0.1", "len": 32}}
    assert v4[2][1] == {"mangle": {"key": {"ct": {"key": "mark"}},
                                   "value": {"|": [{"ct": {"key": "mark"}}, 0x1000]}}}
    v6 = rules_of(batch, "nv_3f0c5d8a_fd10-89-7--_nm64_dnat")
    assert v6[1][0]["match"]["right"] == {"prefix": {"addr": "::1", "len": 128}}
    assert v6[2][-1] == {"dnat": {"addr": "fd10:89:7::2", "family": "ip6", "port": 80}}


def test_range_host_ip_and_sctp() -> None:
    batch = nft.render(rules.build([net()], [pf(pm(8000, 9000, "sctp", "10.0.0.5", rng=3))]))
    (jump,) = rules_of(batch, "NETAVARK-HOSTPORT-DNAT")
    assert jump[:2] == [
        {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                   "right": "10.0.0.5"}},
        {"match": {"op": "==", "left": {"payload": {"protocol": "sctp", "field": "dport"}},
                   "right": {"range": [8000, 8002]}}}]
    chain = rules_of(batch, "nv_3f0c5d8a_10_89_7_0_nm24_dnat")
    assert len(chain) == 2 + 3  # hairpin, localhost, one dnat per port
    assert [(r[1]["match"]["right"], r[-1]["dnat"]["port"]) for r in chain[2:]] == [
        (8000, 9000), (8001, 9001), (8002, 9002)]


def test_backend_is_one_exec_with_the_batch_on_stdin() -> None:
    calls: list[tuple[list[str], str]] = []

    def run(argv: Any, stdin: str) -> ExecResult:
        calls.append((list(argv), stdin))
        return ExecResult(0, "", "")

    backend = nft.NftablesBackend(argv_prefix=["nsenter", "-t", "1", "-n", "--"], runner=run)
    rs = rules.build([net()], [pf(pm())])
    backend.apply(rules.Ruleset(), rs, frozenset())
    assert len(calls) == 1
    assert calls[0][0] == ["nsenter", "-t", "1", "-n", "--", "nft", "-j", "-f", "-"]
    assert json.loads(calls[0][1]) == nft.render(rs, rules.Ruleset())


def test_incremental_setup_only_appends_and_teardown_flushes_what_changed() -> None:
    first = rules.build([net()], [])
    both = rules.build([net()], [pf(pm())])
    grow = nft.render(both, first, skeleton=True)["nftables"]
    # Adding a container's ports deletes nothing (a delete costs the kernel an RCU wait).
    assert not [c for c in grow if "flush" in c or "delete" in c]
    assert [c for c in grow if "rule" in c.get("add", {})]
    shrink = nft.render(first, both, skeleton=True)["nftables"]
    flushed = {c["flush"]["chain"]["name"] for c in shrink if "flush" in c}
    assert "NETAVARK-HOSTPORT-DNAT" in flushed and "FORWARD" not in flushed
    gone = nft.render(rules.Ruleset(), first, skeleton=True)["nftables"]
    assert {"delete": {"table": {"family": "inet", "name": "netavark"}}} not in gone
    assert all(c["delete"]["chain"]["name"].startswith("nv_") for c in gone if "delete" in c)
