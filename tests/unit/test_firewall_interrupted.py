"""A firewall transaction cut short by a kill between saving state and applying it.

The fault-injection suite (tests/integration/test_fault_engine.py) found it: state said a
container's rules were gone while the kernel still had them, and every later diff-based batch
kept them forever. The mark left behind makes the next transaction rebuild the whole table.
"""

from __future__ import annotations

import json
from pathlib import Path

from netns import statefiles
from netns.firewall import select
from tests.unit.test_firewall_rules import net, pf, pm
from tests.unit.test_firewall_state import Recorder


def _batch(rec: Recorder) -> list[dict[str, object]]:
    return list(json.loads(rec.calls[-1][1])["nftables"])


def test_a_finished_transaction_leaves_no_mark(tmp_path: Path) -> None:
    rec = Recorder()
    fw = select("nftables", tmp_path, {}, runner=rec)
    fw.setup([net()], [pf(pm())])
    assert not (tmp_path / statefiles.FIREWALL_DIR / statefiles.FIREWALL_APPLYING).exists()
    fw.teardown([], [pf(pm())])
    # A diff: the table is not deleted, only the port's rules.
    assert {"delete": {"table": {"family": "inet", "name": "netavark"}}} not in _batch(rec)


def test_after_a_killed_transaction_the_next_one_rebuilds_the_table(tmp_path: Path) -> None:
    rec = Recorder()
    fw = select("nftables", tmp_path, {}, runner=rec)
    fw.setup([net()], [pf(pm())])
    # What a process SIGKILLed inside the transaction leaves behind.
    (tmp_path / statefiles.FIREWALL_DIR / statefiles.FIREWALL_APPLYING).touch()
    fw.teardown([], [pf(pm())])
    batch = _batch(rec)
    table = {"table": {"family": "inet", "name": "netavark"}}
    assert batch[:3] == [{"add": table}, {"delete": table}, {"add": table}]  # whole, from state
    assert "8080" not in json.dumps(batch) and "10.89.7.0" in json.dumps(batch)
    assert not (tmp_path / statefiles.FIREWALL_DIR / statefiles.FIREWALL_APPLYING).exists()
    fw.teardown([net()], [])
    assert {"delete": table} not in _batch(rec)  # back to diffs
