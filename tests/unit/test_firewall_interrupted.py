"""A firewall transaction cut short by a kill between applying a batch and saving state.

The fault-injection suite (tests/integration/test_fault_engine.py) found that state and kernel
can disagree after such a kill. The mark left behind makes the next transaction ask the kernel
(list the table) instead of trusting the ledger, and never rebuild or flush the table.
"""

from __future__ import annotations

import json
from pathlib import Path

from netns import statefiles
from netns.firewall import select
from tests.unit.test_firewall_rules import net, pf, pm
from tests.unit.test_firewall_state import Recorder


def test_a_finished_transaction_leaves_no_mark(tmp_path: Path) -> None:
    rec = Recorder()
    fw = select("nftables", tmp_path, {}, runner=rec)
    fw.setup([net()], [pf(pm())])
    assert not (tmp_path / statefiles.FIREWALL_DIR / statefiles.FIREWALL_APPLYING).exists()
    fw.teardown([], [pf(pm())])
    assert not (tmp_path / statefiles.FIREWALL_DIR / statefiles.FIREWALL_APPLYING).exists()


def test_after_a_killed_transaction_the_next_one_asks_the_kernel(tmp_path: Path) -> None:
    rec = Recorder()
    fw = select("nftables", tmp_path, {}, runner=rec)
    fw.setup([net()], [pf(pm())])
    # What a process SIGKILLed inside the transaction leaves behind.
    (tmp_path / statefiles.FIREWALL_DIR / statefiles.FIREWALL_APPLYING).touch()
    other = type(pf())("9" * 64, net(), pf().container_v4, None, (pm(9090),))
    fw.setup([net()], [other])
    assert '"list"' in rec.calls[1][1]  # the table is read first, the ledger not trusted
    for _, stdin in rec.calls:
        cmds = json.loads(stdin)["nftables"]
        assert not [c for c in cmds if "flush" in c or "delete" in c.get("delete", {}).get(
            "table", {})], cmds
    assert not (tmp_path / statefiles.FIREWALL_DIR / statefiles.FIREWALL_APPLYING).exists()
