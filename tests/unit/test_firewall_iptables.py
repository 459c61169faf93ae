"""iptables planning (Netavark 1.4's layout, changed in place) and the batch/fallback protocol.

The layout itself is checked rule for rule against the real netavark 1.4 binary in
tests/integration/test_netavark_coexist.py; these are the plans, without root.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from netns.errors import BurrowError
from netns.firewall import iptables as ipt
from netns.firewall import select
from netns.firewall.runner import ExecResult
from netns.firewall.types import net_hash
from tests.unit.test_firewall_rules import net, pf, pm

H = "F0B0EECB945D8"  # SHA-512("nanet1")[:13], from the spec
CID2 = "7" * 64

FIRST_V4 = f"""*nat
-N NETAVARK-{H}
-A NETAVARK-{H} -d 10.89.7.0/24 -j ACCEPT
-A NETAVARK-{H} ! -d 224.0.0.0/4 -j MASQUERADE
-A POSTROUTING -s 10.89.7.0/24 -j NETAVARK-{H}
-N NETAVARK-HOSTPORT-SETMARK
-N NETAVARK-HOSTPORT-MASQ
-N NETAVARK-HOSTPORT-DNAT
-N NETAVARK-DN-{H}
-A NETAVARK-HOSTPORT-SETMARK -j MARK --set-xmark 0x2000/0x2000
-A NETAVARK-HOSTPORT-MASQ -m comment --comment "netavark portfw masq mark" -m mark --mark 0x2000/0x2000 -j MASQUERADE
-I POSTROUTING 1 -j NETAVARK-HOSTPORT-MASQ
-A NETAVARK-DN-{H} -s 10.89.7.0/24 -p tcp -m tcp --dport 8080 -j NETAVARK-HOSTPORT-SETMARK
-A NETAVARK-DN-{H} -s 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j NETAVARK-HOSTPORT-SETMARK
-A NETAVARK-DN-{H} -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.89.7.2:80
-A NETAVARK-HOSTPORT-DNAT -p tcp -m tcp --dport 8080 -m comment --comment "dnat name: nanet1 id: {pf().container_id}" -j NETAVARK-DN-{H}
-A PREROUTING -m addrtype --dst-type LOCAL -j NETAVARK-HOSTPORT-DNAT
-A OUTPUT -m addrtype --dst-type LOCAL -j NETAVARK-HOSTPORT-DNAT
COMMIT
*filter
-N NETAVARK_ISOLATION_1
-N NETAVARK_ISOLATION_2
-I FORWARD 1 -j NETAVARK_ISOLATION_1
-N NETAVARK_FORWARD
-I NETAVARK_ISOLATION_1 1 -i nabr1 ! -o nabr1 -j NETAVARK_ISOLATION_2
-I NETAVARK_ISOLATION_2 1 -o nabr1 -j DROP
-A NETAVARK_FORWARD -d 10.89.7.0/24 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A NETAVARK_FORWARD -s 10.89.7.0/24 -j ACCEPT
-I FORWARD 2 -m comment --comment "netavark firewall plugin rules" -j NETAVARK_FORWARD
COMMIT
"""  # noqa: E501

# What `iptables-save` shows after netavark 1.4 set up another container on nanet1.
NETAVARK_MADE = f"""*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:NETAVARK_FORWARD - [0:0]
-A FORWARD -m comment --comment "netavark firewall plugin rules" -j NETAVARK_FORWARD
-A NETAVARK_FORWARD -d 10.89.7.0/24 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A NETAVARK_FORWARD -s 10.89.7.0/24 -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:NETAVARK-{H} - [0:0]
:NETAVARK-DN-{H} - [0:0]
:NETAVARK-HOSTPORT-DNAT - [0:0]
:NETAVARK-HOSTPORT-MASQ - [0:0]
:NETAVARK-HOSTPORT-SETMARK - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j NETAVARK-HOSTPORT-DNAT
-A OUTPUT -m addrtype --dst-type LOCAL -j NETAVARK-HOSTPORT-DNAT
-A POSTROUTING -j NETAVARK-HOSTPORT-MASQ
-A POSTROUTING -s 10.89.7.0/24 -j NETAVARK-{H}
-A NETAVARK-{H} -d 10.89.7.0/24 -j ACCEPT
-A NETAVARK-{H} ! -d 224.0.0.0/4 -j MASQUERADE
-A NETAVARK-DN-{H} -s 10.89.7.0/24 -p tcp -m tcp --dport 9090 -j NETAVARK-HOSTPORT-SETMARK
-A NETAVARK-HOSTPORT-MASQ -m comment --comment "netavark portfw masq mark" -m mark --mark 0x2000/0x2000 -j MASQUERADE
-A NETAVARK-HOSTPORT-SETMARK -j MARK --set-xmark 0x2000/0x2000
COMMIT
"""  # noqa: E501


class Fake:
    """A runner: `iptables-restore` answers from `fail` (tool -> how many calls fail first),
    `iptables-save` prints `saved`; every call is recorded."""

    def __init__(self, saved: str = "", fail: dict[str, int] | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.saved = saved
        self.fail = dict(fail or {})

    def __call__(self, argv: Sequence[str], stdin: str) -> ExecResult:
        tool = argv[0]
        self.calls.append((tool, stdin))
        if tool.endswith("-save"):
            return ExecResult(0, self.saved, "")
        if self.fail.get(tool, 0) > 0:
            self.fail[tool] -= 1
            return ExecResult(1, "", "iptables-restore: line 2 failed\n")
        return ExecResult(0, "", "")

    def tools(self) -> list[str]:
        return [t for t, _ in self.calls]


def fw(tmp: Path, run: Fake) -> ipt.IptablesFirewall:
    out = select("iptables", tmp, {}, runner=run)
    assert isinstance(out, ipt.IptablesFirewall)
    return out


def test_chain_names_are_netavarks() -> None:
    assert net_hash("nanet1") == H
    assert ipt.net_chain(net()) == f"NETAVARK-{H}"
    assert ipt.dn_chain(net()) == f"NETAVARK-DN-{H}"


def test_first_setup_is_netavarks_layout_in_one_batch(tmp_path: Path) -> None:
    run = Fake()
    fw(tmp_path, run).setup([net(isolate="true", dual=False)], [pf(pm(), v6=False)],
                            fresh=["nabr1"])
    assert run.calls == [("iptables-restore", FIRST_V4)]  # v4 only: no ip6tables at all


def test_next_container_adds_only_its_own_rules(tmp_path: Path) -> None:
    run = Fake()
    f = fw(tmp_path, run)
    n = net(dual=False)
    f.setup([n], [pf(pm(), network=n, v6=False)], fresh=["nabr1"])
    other = pf(pm(host_port=9090), network=n, v6=False)
    other = type(other)(CID2, n, other.container_v4, None, other.mappings)
    f.setup([n], [other])
    tool, batch = run.calls[-1]
    lines = batch.splitlines()
    assert tool == "iptables-restore" and lines[0] == "*nat" and lines[-1] == "COMMIT"
    assert len(lines) == 6 and all(line.startswith("-A ") for line in lines[1:5])
    assert all("9090" in line for line in lines[1:5])  # the container's 4 rules, nothing else
    f.teardown([], [other])
    assert [line[:3] for line in run.calls[-1][1].splitlines()[1:5]] == ["-D "] * 4


def test_a_wrong_ledger_falls_back_to_the_kernels_tables(tmp_path: Path) -> None:
    # burrow's ledger doesn't know netavark made the network: `-N NETAVARK-<H>` fails the
    # batch, burrow reads the tables once and adds only what is missing, without duplicates.
    run = Fake(saved=NETAVARK_MADE, fail={"iptables-restore": 1})
    n = net(dual=False)
    fw(tmp_path, run).setup([n], [pf(pm(), network=n, v6=False)])
    assert run.tools() == ["iptables-restore", "iptables-save", "iptables-restore"]
    batch = run.calls[-1][1]
    assert "-N " not in batch and "NETAVARK_FORWARD -s" not in batch
    assert batch.count("\n-A ") == 4 and "--dport 8080" in batch
    # The ledger learnt the network: the next container is one exec again.
    other = type(pf())(CID2, n, pf().container_v4, None, (pm(host_port=7070),))
    fw(tmp_path, run).setup([n], [other])
    assert run.tools()[3:] == ["iptables-restore"]


def test_teardown_of_the_last_container_keeps_the_base_chains(tmp_path: Path) -> None:
    run = Fake()
    f = fw(tmp_path, run)
    n = net(isolate="true", dual=False)
    f.setup([n], [pf(pm(), network=n, v6=False)], fresh=["nabr1"])
    f.teardown([n], [pf(pm(), network=n, v6=False)])
    batch = run.calls[-1][1]
    assert f"-X NETAVARK-{H}" in batch and f"-X NETAVARK-DN-{H}" in batch
    assert "-D FORWARD -j NETAVARK_ISOLATION_1" in batch
    # Netavark's base chains, their jumps and the mark rules stay (teardown policy Never).
    for kept in ("-X NETAVARK_FORWARD", "-X NETAVARK-HOSTPORT", "-X NETAVARK_ISOLATION",
                 "-D PREROUTING", "-D OUTPUT", "-D POSTROUTING -j", "-D FORWARD -m comment",
                 "--set-xmark", "masq mark"):
        assert kept not in batch


def test_fresh_bridge_ignores_a_stale_ledger(tmp_path: Path) -> None:
    # burrow set the network up, netavark tore its last container down (bridge and rules
    # gone, burrow not told): a setup that creates the bridge again must add the rules again.
    run = Fake()
    f = fw(tmp_path, run)
    n = net(dual=False)
    f.setup([n], [], fresh=["nabr1"])
    f.setup([n], [])
    assert run.tools() == ["iptables-restore"]  # second: nothing to do, no exec
    f.setup([n], [], fresh=["nabr1"])
    assert f"-N NETAVARK-{H}" in run.calls[-1][1]


def test_v6_failure_rolls_v4_back_and_reports(tmp_path: Path) -> None:
    run = Fake(fail={"ip6tables-restore": 2})
    with pytest.raises(BurrowError, match=r"apply batch \(ip6tables-restore\): iptables-restore: "
                                          r"line 2 failed"):
        fw(tmp_path, run).setup([net()], [pf(pm())], fresh=["nabr1"])
    assert run.tools() == ["iptables-restore", "ip6tables-restore", "ip6tables-save",
                           "ip6tables-restore", "iptables-restore"]
    undo = run.calls[-1][1]  # v4 back as it was: the new network's rules and chains go
    assert f"-X NETAVARK-{H}" in undo and "-D NETAVARK_FORWARD -s 10.89.7.0/24 -j ACCEPT" in undo
    assert not (tmp_path / "firewall/networks").exists()


def test_invalid_intent_fails_before_any_exec_or_write(tmp_path: Path) -> None:
    run = Fake()
    with pytest.raises(BurrowError, match=r'^firewall \(iptables\): invalid host ip "nope"'):
        fw(tmp_path, run).setup([net()], [pf(pm(host_ip="nope"))])
    assert run.calls == [] and not (tmp_path / "firewall/networks").exists()


def test_ledger_is_small_and_keyed_by_network(tmp_path: Path) -> None:
    run = Fake()
    fw(tmp_path, run).setup([net(dual=False)], [pf(pm(), v6=False)], fresh=["nabr1"])
    led = json.loads((tmp_path / "firewall/.burrow-ledger.json").read_text())["iptables"]["v4"]
    assert led == {"fwd": True, "hostport": True, "iso": False, "iso3": False, "isojump": False,
                   "nets": {H: ["false", "nabr1"]}, "dn": [H]}
