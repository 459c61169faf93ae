"""The in-process nftables path stays O(1) per container (issue 15), and stays exact.

A container's port rules are added without `nft --echo` (which makes libnftables fetch the
whole ruleset) and their handles come from two probes of the table's handle counter
(firewall/nfnl.py). These run the backend as the warm engine does: libnftables in this
process, inside a throwaway host netns.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from netns.firewall import select
from netns.firewall.nfnl import Nfnl
from netns.firewall.nftables import MARK_CHAIN, NftablesFirewall, subnet_chain
from netns.firewall.runner import ExecResult, Runner
from netns.firewall.state import port_key
from netns.nsenter import entered
from tests.integration.test_firewall_ruleset import forward, network, nft_list
from tests.nsutil import Netns

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="environment: needs root")


class Recording:
    """The in-process libnftables runner, recording each call (and running a hook after)."""

    def __init__(self, inner: Runner) -> None:
        self.inner = inner
        self.calls: list[tuple[list[str], str]] = []
        self.after: Any = None

    def __call__(self, argv: Sequence[str], stdin: str) -> ExecResult:
        self.calls.append((list(argv), stdin))
        res = self.inner(argv, stdin)
        if self.after is not None:
            self.after()
        return res


@pytest.fixture
def inproc(host_ns: Netns, tmp_path: Path) -> Iterator[tuple[NftablesFirewall, Recording]]:
    fd = os.open(host_ns.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with entered(fd):
            fw = select("nftables", tmp_path, {})
            fw = getattr(fw, "inner", fw)  # under firewalld's trusted-zone hook
            assert isinstance(fw, NftablesFirewall)
            if fw.nfnl is None:
                pytest.skip("environment: libnftables.so.1 does not load")
            rec = Recording(fw.runner)
            fw.runner = rec
            yield fw, rec
    finally:
        os.close(fd)


def listed_handles(ns: Netns, chain: str) -> dict[int, list[Any]]:
    out = ns.run(["nft", "-j", "-a", "list", "chain", "inet", "netavark", chain]).stdout
    return {o["rule"]["handle"]: o["rule"]["expr"]
            for o in json.loads(out)["nftables"] if "rule" in o}


def test_port_setup_needs_no_echo_and_its_counted_handles_are_the_kernels(
        inproc: tuple[NftablesFirewall, Recording], host_ns: Netns) -> None:
    fw, rec = inproc
    net = network(dual=False, third=71)
    ports = [forward(net, 9000 + i, f"{i:064x}") for i in range(4)]
    fw.setup([net], ports[:1], fresh=[net.bridge])
    rec.calls.clear()
    for p in ports[1:]:
        fw.setup([net], [p])
    assert rec.calls and all("-e" not in argv for argv, _ in rec.calls)
    assert not any('"list"' in stdin for _, stdin in rec.calls)
    dnat = subnet_chain(net.id, net.subnets[0], True)
    kernel = {**listed_handles(host_ns, dnat), **listed_handles(host_ns, "NETAVARK-HOSTPORT-DNAT")}
    for i, p in enumerate(ports[1:], 1):
        saved = fw.store.handles(port_key(p))
        assert saved is not None and len(saved["rules"]) == 4
        for chain, handle in saved["rules"]:
            assert chain in (dnat, "NETAVARK-HOSTPORT-DNAT")
            assert str(9000 + i) in json.dumps(kernel[handle])  # that handle is this port's
    # The probes left nothing: SETMARK holds its one rule.
    assert len(listed_handles(host_ns, MARK_CHAIN)) == 1
    rec.calls.clear()
    fw.teardown([], [ports[2]])
    assert not any('"list"' in stdin for _, stdin in rec.calls)  # deleted by handle
    listing = nft_list(host_ns)
    assert "9002" not in listing and all(str(9000 + i) in listing for i in (0, 1, 3))


def test_another_writer_between_the_probes_means_no_handles_and_an_exact_teardown(
        inproc: tuple[NftablesFirewall, Recording], host_ns: Netns) -> None:
    """Netavark adding a rule while burrow's batch lands widens the gap: burrow keeps no
    handles for that container (they could be wrong) and its teardown lists instead."""
    fw, rec = inproc
    net = network(dual=False, third=72)
    p0, p1 = forward(net, 9100, "a" * 64), forward(net, 9101, "b" * 64)
    fw.setup([net], [p0], fresh=[net.bridge])
    rec.after = lambda: host_ns.run(
        ["nft", "add rule inet netavark NETAVARK-HOSTPORT-DNAT tcp dport 9199 accept"])
    fw.setup([net], [p1])
    rec.after = None
    assert fw.store.handles(port_key(p1)) is None
    fw.teardown([], [p1])
    listing = nft_list(host_ns)
    assert "9101" not in listing and "9100" in listing and "dport 9199 accept" in listing


def test_probe_moves_the_counter_by_one_and_leaves_nothing(host_ns: Netns) -> None:
    host_ns.run(["nft", "add table inet bfwt; add chain inet bfwt c; add rule inet bfwt c accept"])
    before = host_ns.run(["nft", "-a", "list", "ruleset"]).stdout
    fd = os.open(host_ns.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with entered(fd):
            nl = Nfnl()
            a = nl.next_handle("bfwt", "c")
            b = nl.next_handle("bfwt", "c")
            assert nl.table_handle("bfwt") is not None and nl.table_handle("nosuch") is None
    finally:
        os.close(fd)
    assert b == a + 1
    assert host_ns.run(["nft", "-a", "list", "ruleset"]).stdout == before
