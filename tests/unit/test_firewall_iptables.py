"""iptables render transcripts (Netavark 1.4 chain names) and the one-batch-per-family apply."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from netns.firewall import iptables as ipt
from netns.firewall import rules
from netns.firewall.runner import ExecResult
from tests.unit.test_firewall_rules import net, pf, pm

H = "F0B0EECB945D8"  # SHA-512("nanet1")[:13], from the spec

GOLDEN_V4 = f"""*filter
:NETAVARK_FORWARD - [0:0]
:NETAVARK_ISOLATION_1 - [0:0]
:NETAVARK_ISOLATION_2 - [0:0]
:NETAVARK_ISOLATION_3 - [0:0]
-A FORWARD -m comment --comment "netavark firewall plugin rules" -j NETAVARK_FORWARD
-A NETAVARK_FORWARD -j NETAVARK_ISOLATION_1
-A NETAVARK_ISOLATION_1 -i nabr1 ! -o nabr1 -j NETAVARK_ISOLATION_2
-A NETAVARK_ISOLATION_2 -o nabr1 -j DROP
-A NETAVARK_ISOLATION_3 -j NETAVARK_ISOLATION_2
-A NETAVARK_FORWARD -d 10.89.7.0/24 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A NETAVARK_FORWARD -s 10.89.7.0/24 -j ACCEPT
COMMIT
*nat
:NETAVARK-HOSTPORT-DNAT - [0:0]
:NETAVARK-HOSTPORT-SETMARK - [0:0]
:NETAVARK-HOSTPORT-MASQ - [0:0]
:NETAVARK-{H} - [0:0]
:NETAVARK-DN-{H} - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j NETAVARK-HOSTPORT-DNAT
-A OUTPUT -m addrtype --dst-type LOCAL -j NETAVARK-HOSTPORT-DNAT
-A POSTROUTING -j NETAVARK-HOSTPORT-MASQ
-A NETAVARK-HOSTPORT-MASQ -m comment --comment "netavark portfw masq mark" -m mark --mark 0x2000/0x2000 -j MASQUERADE
-A NETAVARK-HOSTPORT-SETMARK -j MARK --set-xmark 0x2000/0x2000
-A NETAVARK-HOSTPORT-MASQ -s 10.89.7.0/24 -j NETAVARK-{H}
-A NETAVARK-{H} -d 10.89.7.0/24 -j ACCEPT
-A NETAVARK-{H} ! -d 224.0.0.0/4 -j MASQUERADE
-A NETAVARK-HOSTPORT-DNAT -d 10.89.7.1/32 -p udp -m udp --dport 53 -j DNAT --to-destination 10.89.7.1:10053
-A NETAVARK-HOSTPORT-DNAT -d 10.89.7.1/32 -p tcp -m tcp --dport 53 -j DNAT --to-destination 10.89.7.1:10053
-A NETAVARK-HOSTPORT-DNAT -p tcp -m tcp --dport 8080 -m comment --comment "dnat name: nanet1 id: {pf().container_id}" -j NETAVARK-DN-{H}
-A NETAVARK-DN-{H} -s 10.89.7.0/24 -p tcp -m tcp --dport 8080 -j NETAVARK-HOSTPORT-SETMARK
-A NETAVARK-DN-{H} -s 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j NETAVARK-HOSTPORT-SETMARK
-A NETAVARK-DN-{H} -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.89.7.2:80
COMMIT
"""  # noqa: E501


def full(**kw: object) -> rules.Ruleset:
    return rules.build([net(isolate="true", dns_port=10053)], [pf(pm(**kw))])  # type: ignore[arg-type]


def test_chain_hash_matches_netavark() -> None:
    assert ipt.net_hash("nanet1") == H
    assert ipt.net_chain("nanet1") == f"NETAVARK-{H}"
    assert ipt.dn_chain("nanet1") == f"NETAVARK-DN-{H}"


def test_golden_v4_first_setup() -> None:
    assert ipt.render(4, rules.Ruleset(), full().for_family(4), frozenset()) == GOLDEN_V4


def test_v6_render_uses_v6_addresses() -> None:
    text = ipt.render(6, rules.Ruleset(), full().for_family(6), frozenset())
    assert (f"-A NETAVARK-DN-{H} -s ::1/128 -p tcp -m tcp --dport 8080 "
            "-j NETAVARK-HOSTPORT-SETMARK") in text
    assert (f"-A NETAVARK-DN-{H} -p tcp -m tcp --dport 8080 "
            "-j DNAT --to-destination [fd10:89:7::2]:80") in text
    assert f"-A NETAVARK-{H} ! -d ff00::/8 -j MASQUERADE" in text
    assert ("-A NETAVARK-HOSTPORT-DNAT -d fd10:89:7::1/128 -p udp -m udp --dport 53 -j DNAT "
            "--to-destination [fd10:89:7::1]:10053") in text
    assert "10.89.7" not in text


def test_range_host_ip_sctp() -> None:
    text = ipt.render(4, rules.Ruleset(),
                      full(host_port=8000, ctr=9000, proto="sctp", host_ip="10.0.0.5", rng=3)
                      .for_family(4), frozenset())
    assert (f"-A NETAVARK-HOSTPORT-DNAT -d 10.0.0.5/32 -p sctp -m sctp --dport 8000:8002 "
            f'-m comment --comment "dnat name: nanet1 id: {pf().container_id}" '
            f"-j NETAVARK-DN-{H}") in text
    # The /8000 suffix keeps the range mapping 1:1 (8001 → 9001), not "any port in 9000-9002".
    assert (f"-A NETAVARK-DN-{H} -d 10.0.0.5/32 -p sctp -m sctp --dport 8000:8002 -j DNAT "
            f"--to-destination 10.89.7.2:9000-9002/8000") in text


def test_installed_jumps_are_deleted_then_readded() -> None:
    present = frozenset(j.key(4) for j in ipt.JUMPS)
    text = ipt.render(4, full().for_family(4), full().for_family(4), present)
    lines = text.splitlines()
    d = lines.index('-D FORWARD -m comment --comment "netavark firewall plugin rules" '
                    "-j NETAVARK_FORWARD")
    assert lines[d + 1].startswith("-A FORWARD ")
    assert "-D PREROUTING -m addrtype --dst-type LOCAL -j NETAVARK-HOSTPORT-DNAT" in lines
    assert "-D POSTROUTING -j NETAVARK-HOSTPORT-MASQ" in lines


def test_teardown_of_everything_removes_jumps_and_chains() -> None:
    present = frozenset(j.key(4) for j in ipt.JUMPS)
    text = ipt.render(4, full().for_family(4), rules.Ruleset(), present)
    assert "-A " not in text
    for chain in (*ipt.FILTER_CHAINS, *ipt.NAT_CHAINS, f"NETAVARK-{H}", f"NETAVARK-DN-{H}"):
        assert f":{chain} - [0:0]" in text and f"-X {chain}" in text
    assert text.count("-D ") == 4


def test_stale_network_chains_are_deleted() -> None:
    other = net(name="other", bridge="br9", nid="99999999")
    old = rules.build([net(), other], [pf(pm())]).for_family(4)
    new = rules.build([other], []).for_family(4)
    text = ipt.render(4, old, new, frozenset())
    assert f"-X NETAVARK-{H}" in text and f"-X NETAVARK-DN-{H}" in text
    assert f"-X {ipt.net_chain('other')}" not in text
    assert "-X NETAVARK_FORWARD" not in text


class Fake:
    """Records execs; `fail(argv, stdin)` decides which ones fail."""

    def __init__(self, fail: Callable[[list[str], str], bool] = lambda a, s: False) -> None:
        self.calls: list[tuple[list[str], str]] = []
        self.fail = fail

    def __call__(self, argv: Sequence[str], stdin: str) -> ExecResult:
        self.calls.append((list(argv), stdin))
        if self.fail(list(argv), stdin):
            return ExecResult(1, "", "iptables-restore: line 3 failed\n")
        return ExecResult(0, "", "")

    def tools(self) -> list[str]:
        return [a[0] for a, _ in self.calls]


def test_v4_only_is_exactly_one_exec() -> None:
    fake = Fake()
    rs = rules.build([net(dual=False)], [pf(pm(), v6=False, network=net(dual=False))])
    installed = ipt.IptablesBackend(runner=fake).apply(rules.Ruleset(), rs, frozenset())
    assert fake.tools() == ["iptables-restore"]
    assert fake.calls[0][0] == ["iptables-restore", "-w", "--noflush"]
    assert installed == {j.key(4) for j in ipt.JUMPS}


def test_dual_stack_is_one_exec_per_family() -> None:
    fake = Fake()
    installed = ipt.IptablesBackend(runner=fake).apply(rules.Ruleset(), full(), frozenset())
    assert fake.tools() == ["iptables-restore", "ip6tables-restore"]
    assert len(installed) == 8


def test_state_lied_probe_with_check_and_retry_once() -> None:
    # State says the jumps exist but someone flushed: the -D lines fail the batch.
    fake = Fake(lambda a, s: a[0] == "iptables-restore" and "-D " in s or a[0] == "iptables")
    present = frozenset(j.key(4) for j in ipt.JUMPS)
    rs = rules.build([net(dual=False)], [])
    installed = ipt.IptablesBackend(runner=fake).apply(rs, rs, present)
    assert fake.tools() == ["iptables-restore"] + ["iptables"] * 4 + ["iptables-restore"]
    assert fake.calls[1][0] == ["iptables", "-w", "-t", "filter", "-C", "FORWARD", "-m",
                                "comment", "--comment", "netavark firewall plugin rules",
                                "-j", "NETAVARK_FORWARD"]
    assert "-D " not in fake.calls[-1][1]
    assert installed == present


def test_v6_failure_rolls_v4_back_and_reports() -> None:
    fake = Fake(lambda a, s: a[0] in ("ip6tables-restore", "ip6tables"))
    backend = ipt.IptablesBackend(runner=fake)
    try:
        backend.apply(rules.Ruleset(), full(), frozenset())
    except Exception as exc:  # noqa: BLE001
        assert str(exc) == "apply batch (ip6tables-restore): iptables-restore: line 3 failed"
    else:
        raise AssertionError("no error")
    # v4 applied, v6 failed (+ probe + no retry since the probe agrees), then v4 reverted.
    assert fake.tools()[0] == "iptables-restore" and fake.tools()[-1] == "iptables-restore"
    assert "-A " not in fake.calls[-1][1]


def test_nothing_v6_ever_means_no_v6_exec_on_teardown() -> None:
    fake = Fake()
    rs = rules.build([net(dual=False)], [])
    ipt.IptablesBackend(runner=fake).apply(rs, rules.Ruleset(),
                                           frozenset(j.key(4) for j in ipt.JUMPS))
    assert fake.tools() == ["iptables-restore"]
