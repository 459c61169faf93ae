"""A firewall transaction cut short by a kill between applying a batch and saving state.

The fault-injection suite (tests/integration/test_fault_engine.py) found that state and kernel
can disagree after such a kill. The mark left behind makes the next transaction ask the kernel
(list the table) instead of trusting the ledger, and never rebuild or flush the table.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from netns import statefiles
from netns.firewall import select
from netns.firewall.nftables import NftablesFirewall
from netns.firewall.runner import ExecResult
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


def test_the_mark_is_the_lock_files_content_and_no_file_comes_and_goes(tmp_path: Path) -> None:
    """A change marks itself in the lock file it holds (no file made and removed per change:
    on a journal-less ext4 each such inode made every later create slower for 30 s)."""
    rec = Recorder()
    fw = select("nftables", tmp_path, {}, runner=rec)
    fw.setup([net()], [pf(pm())])
    root = tmp_path / statefiles.FIREWALL_DIR
    lock = root / statefiles.FIREWALL_LOCK
    seen: list[tuple[bytes, bool]] = []
    assert isinstance(fw, NftablesFirewall)  # a fake runner: no firewalld hook around it

    def spy(argv: Sequence[str], stdin: str) -> ExecResult:
        seen.append((lock.read_bytes(), (root / statefiles.FIREWALL_APPLYING).exists()))
        return rec(argv, stdin)

    fw.runner = spy
    before = lock.stat().st_ino
    fw.teardown([], [pf(pm())])
    assert seen and all(content and not old for content, old in seen)  # marked while applying
    assert lock.read_bytes() == b"" and lock.stat().st_ino == before  # cleared in place
    # A kill leaves the content: the next change asks the kernel first.
    lock.write_text("applying\n")
    rec.calls.clear()
    fw.runner = rec
    fw.setup([net()], [pf(pm())])
    assert '"list"' in rec.calls[0][1]
    assert lock.read_bytes() == b""
