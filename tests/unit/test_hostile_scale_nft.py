"""Teardown of many published ports, planned from a listed nftables table (pure).

`podman run -p 1-65535:1-65535` sends one mapping with range 65535, and netavark's layout has
one dnat rule per port. The teardown looked up every rule of the mapping with a list search
(`h not in mine`) and scanned the whole `_dnat` chain once per mapping, so this teardown took
hours (and 10,000 separate mappings more than ten minutes): the container's rules, and so the
host ports, stayed. Each case here runs under an alarm as a hang guard, not as a timing test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from netns.firewall import nftables as nft
from netns.firewall import rules
from tests import alarm
from tests.unit.test_firewall_nftables import SUB4, batch, listing
from tests.unit.test_firewall_rules import net, pf, pm


@pytest.fixture
def hang_guard() -> Iterator[None]:
    with alarm.hang_guard(60, "planning the teardown did not finish in 60 s"):
        yield


def _table(ports: Any) -> nft.Listed:
    cmds = batch([net(dual=False)], [ports], nft.NftLedger(True, {}))
    return listing(*[(c["add"]["rule"]["chain"], 100 + i, c["add"]["rule"]["expr"])
                     for i, c in enumerate(cmds) if "rule" in c.get("add", {})])


def _port_rules(table: nft.Listed) -> set[int]:
    return {h for chain in ("NETAVARK-HOSTPORT-DNAT", f"{SUB4}_dnat")
            for h, _ in table.rules.get(chain, [])}


@pytest.mark.parametrize("mappings", [
    (pm(1, 1, rng=65535),),
    tuple(pm(1000 + i, 80) for i in range(3000)),
], ids=["one_range_of_65535", "3000_mappings"])
def test_the_teardown_of_many_ports_is_planned_and_takes_every_rule(
    hang_guard: None, mappings: tuple[Any, ...]
) -> None:
    ports = pf(*mappings, network=net(dual=False), v6=False)
    table = _table(ports)
    b = nft.Batch("netavark")
    nft.plan_teardown(b, [], list(rules.build([], [ports]).ports), table)
    gone = [c["delete"]["rule"]["handle"] for c in b.cmds]
    assert len(gone) == len(set(gone))
    assert set(gone) == _port_rules(table)
