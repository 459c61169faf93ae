"""The in-process iptables driver (iptables-nft) deletes a container's rules by handle
(issue 15): its teardown lists nothing and execs nothing however many containers there are,
removes exactly that container's rules, and falls back to `iptables-restore -D` whenever its
handles can't be trusted. Runs the backend as the warm engine does: in this process, inside a
throwaway host netns.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from netns.firewall import select
from netns.firewall.iptables import IptablesFirewall
from netns.firewall.nfnl import Nfnl, NfnlError
from netns.firewall.runner import ExecResult, Runner
from netns.firewall.state import port_key
from netns.firewall.types import NetworkFw, PortFw
from netns.nsenter import entered
from tests.integration.test_firewall_ruleset import forward, iptables_save, network
from tests.nsutil import Netns

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="environment: needs root")


class Recording:
    """The real runner, recording each call (and running a hook after it)."""

    def __init__(self, inner: Runner) -> None:
        self.inner = inner
        self.calls: list[list[str]] = []
        self.after: Any = None

    def __call__(self, argv: Sequence[str], stdin: str) -> ExecResult:
        self.calls.append(list(argv))
        res = self.inner(argv, stdin)
        if self.after is not None:
            self.after()
        return res


@pytest.fixture
def inproc(host_ns: Netns, tmp_path: Path) -> Iterator[tuple[IptablesFirewall, Recording]]:
    if "nf_tables" not in host_ns.run(["iptables", "--version"]).stdout:
        pytest.skip("environment: iptables is not iptables-nft")
    fd = os.open(host_ns.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with entered(fd):
            fw = select("iptables", tmp_path, {})
            fw = getattr(fw, "inner", fw)  # under firewalld's trusted-zone hook
            assert isinstance(fw, IptablesFirewall) and fw.nfnl is not None
            rec = Recording(fw.runner)
            fw.runner = rec
            yield fw, rec
    finally:
        os.close(fd)


def port(net: NetworkFw, i: int) -> PortFw:
    p = forward(net, 9000 + i, f"{i + 1:064x}")
    v6 = p.container_v6 + i if p.container_v6 is not None else None
    return PortFw(p.container_id, net, p.container_v4 + i if p.container_v4 else None, v6,
                  p.mappings)


def rules_of(ns: Netns, hostport: int, v6: bool = False) -> list[str]:
    return [line for line in iptables_save(ns, v6).splitlines() if f"--dport {hostport} " in line]


def nat_handles(ns: Netns, family: str) -> dict[int, str]:
    out = json.loads(ns.run(["nft", "-j", "-a", "list", "table", family, "nat"]).stdout)
    return {o["rule"]["handle"]: json.dumps(o["rule"]["expr"]) for o in out["nftables"]
            if "rule" in o}


@pytest.mark.parametrize("dual", [False, True])
def test_teardown_deletes_exactly_its_rules_by_handle_without_exec(
        inproc: tuple[IptablesFirewall, Recording], host_ns: Netns, dual: bool) -> None:
    fw, rec = inproc
    net = network(dual=dual, third=73)
    ports = [port(net, i) for i in range(6)]
    fw.setup([net], ports[:1], fresh=[net.bridge])
    for p in ports[1:]:
        fw.setup([net], [p])
    kernel = {4: nat_handles(host_ns, "ip"), 6: nat_handles(host_ns, "ip6") if dual else {}}
    for i, p in enumerate(ports[1:], 1):
        saved = fw.store.handles(port_key(p), "iptables")
        assert saved is not None and len(saved["rules"]) == (8 if dual else 4)
        for fam, _chain, handle in saved["rules"]:
            assert str(9000 + i) in kernel[fam][handle]  # that handle is this port's rule
    before = {v6: iptables_save(host_ns, v6) for v6 in (False, True)}
    rec.calls.clear()
    fw.teardown([], [ports[3]])
    assert rec.calls == []  # no iptables-restore -D, no iptables-save: by handle only
    for v6 in (False, True):
        assert not rules_of(host_ns, 9003, v6)
        gone = [line for line in before[v6].splitlines() if "--dport 9003 " in line]
        assert iptables_save(host_ns, v6).splitlines() == [
            line for line in before[v6].splitlines() if line not in gone]  # nothing else moved
    assert fw.store.handles(port_key(ports[3]), "iptables") is None
    for i in (0, 1, 2, 4, 5):
        assert len(rules_of(host_ns, 9000 + i)) == 4
        assert len(rules_of(host_ns, 9000 + i, v6=True)) == (4 if dual else 0)


def test_work_per_teardown_does_not_grow_with_containers(
        inproc: tuple[IptablesFirewall, Recording], host_ns: Netns) -> None:
    """What a teardown sends is its own handles: the same size at 5 and at 40 containers."""
    fw, rec = inproc
    net = network(dual=False, third=74)
    ports = [port(net, i) for i in range(41)]
    fw.setup([net], ports[:1], fresh=[net.bridge])
    sent: list[int] = []
    real = fw.nfnl
    assert real is not None

    class Spy(Nfnl):
        def delete_rules(self, rules: Sequence[tuple[int, str, str, int]]) -> None:
            sent.append(len(rules))
            real.delete_rules(rules)

        def table_handle(self, table: str, family: int | None = None) -> int | None:
            return real.table_handle(table, family)

        def next_handle(self, table: str, chain: str, family: int | None = None) -> int:
            return real.next_handle(table, chain, family)

    fw.nfnl = Spy()
    for p in ports[1:]:
        fw.setup([net], [p])
    rec.calls.clear()
    for p in reversed(ports[1:]):
        fw.teardown([], [p])
    assert rec.calls == [] and sent == [4] * 40
    fw.teardown([net], ports[:1])
    assert "NETAVARK-DN-" not in iptables_save(host_ns)


def test_another_writer_between_the_probes_leaves_no_handles_and_an_exact_teardown(
        inproc: tuple[IptablesFirewall, Recording], host_ns: Netns) -> None:
    fw, rec = inproc
    net = network(dual=False, third=75)
    p0, p1 = port(net, 0), port(net, 1)
    fw.setup([net], [p0], fresh=[net.bridge])
    rec.after = lambda: host_ns.run(
        ["iptables", "-t", "nat", "-A", "NETAVARK-HOSTPORT-DNAT", "-p", "tcp", "--dport",
         "9199", "-j", "ACCEPT"])
    fw.setup([net], [p1])
    rec.after = None
    assert fw.store.handles(port_key(p1), "iptables") is None
    rec.calls.clear()
    fw.teardown([], [p1])
    assert [argv[0] for argv in rec.calls] == ["iptables-restore"]  # -D, as before
    assert not rules_of(host_ns, 9001) and len(rules_of(host_ns, 9000)) == 4
    assert rules_of(host_ns, 9199)


@pytest.mark.parametrize("remake", ["flush chains", "table made again"])
def test_stale_handles_fall_back_to_an_exact_teardown(
        inproc: tuple[IptablesFirewall, Recording], host_ns: Netns, remake: str) -> None:
    """After the rules were made again (a flush, or the table deleted, then firewall-reload)
    the saved handles name nothing or, in a new table, other rules: the teardown sees it,
    deletes nothing by them, and runs `-D` instead."""
    fw, rec = inproc
    net = network(dual=False, third=76)
    ports = [port(net, i) for i in range(4)]
    fw.setup([net], ports[:1], fresh=[net.bridge])
    for p in ports[1:]:
        fw.setup([net], [p])
    if remake == "flush chains":
        host_ns.run(["iptables", "-t", "nat", "-F"])
    else:
        host_ns.run(["nft", "delete", "table", "ip", "nat"])
    fw.reload()
    assert all(len(rules_of(host_ns, 9000 + i)) == 4 for i in range(4))
    rec.calls.clear()
    fw.teardown([], [ports[1]])
    assert [argv[0] for argv in rec.calls] == ["iptables-restore"]
    assert not rules_of(host_ns, 9001)
    assert all(len(rules_of(host_ns, 9000 + i)) == 4 for i in (0, 2, 3))


def test_delete_rules_refuses_a_rule_without_its_chain() -> None:
    """Without NFTA_RULE_CHAIN the kernel deletes every rule of the table: never sent."""
    with pytest.raises(NfnlError, match="refusing"):
        Nfnl().delete_rules([(2, "nat", "", 5)])


def test_a_setup_after_a_cut_short_one_keeps_no_handles_for_rules_it_found(
        inproc: tuple[IptablesFirewall, Recording], host_ns: Netns) -> None:
    """A setup killed after its batch went in, before its state was saved: the retry plans
    from the kernel, finds the container's rules there and adds none, so it can't know their
    handles; it keeps none, and the teardown removes them with `-D`."""
    fw, rec = inproc
    net = network(dual=False, third=77)
    p0, p1 = port(net, 0), port(net, 1)
    fw.setup([net], [p0], fresh=[net.bridge])
    fw.setup([net], [p1])
    assert fw.store.handles(port_key(p1), "iptables") is not None
    # What the kill leaves: the rules in, the mark held, no state saved for the container.
    fw.store.drop_handles([port_key(p1)], "iptables")
    fw.store.remove([], [p1])
    (fw.store.root / "lock").write_text("applying\n")
    fw.setup([net], [p1])
    assert len(rules_of(host_ns, 9001)) == 4  # not doubled
    assert fw.store.handles(port_key(p1), "iptables") is None
    rec.calls.clear()
    fw.teardown([], [p1])
    assert [argv[0] for argv in rec.calls] == ["iptables-restore"]
    assert not rules_of(host_ns, 9001) and len(rules_of(host_ns, 9000)) == 4


def test_a_container_setup_is_one_commit_and_deletes_nothing(
        inproc: tuple[IptablesFirewall, Recording], host_ns: Netns) -> None:
    """Its handles come from the commit's own notifications: no probe rule added and deleted
    (a deleted rule makes the next netfilter socket to close, iptables-restore's at its exit,
    wait for the kernel to free it)."""
    fw, _ = inproc
    net = network(dual=False, third=78)
    fw.setup([net], [port(net, 0)], fresh=[net.bridge])
    spy = Nfnl()
    watch = spy.watch()
    fw.setup([net], [port(net, 1)])
    notes = spy.notes(watch)
    assert sum(n.gen for n in notes) == 1
    assert [n.chain for n in notes if not n.gen] == [
        "NETAVARK-DN-" + net.hash] * 3 + ["NETAVARK-HOSTPORT-DNAT"]
    assert fw.store.handles(port_key(port(net, 1)), "iptables") is not None
