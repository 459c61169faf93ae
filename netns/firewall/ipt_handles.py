"""The iptables driver's container rules by handle, where iptables is iptables-nft.

iptables-nft keeps Netavark 1.4's rules as nf_tables rules in tables `ip nat` / `ip6 nat`,
and `iptables-restore -D <spec>` finds each by fetching and decoding its whole chain: with N
containers, NETAVARK-HOSTPORT-DNAT holds N jumps and NETAVARK-DN-<H> 3N rules, so every
teardown grew with N. Instead, while a container's `-A` batch runs, burrow listens to
nf_tables' change notifications (firewall/nfnl.py `watch`): the commit announces each rule
it added with its handle, then the transaction's end. Teardown deletes those handles in one
nfnetlink transaction: nothing listed, no exec. (Not the nftables backend's probes: a probe
deletes its rule, and the next process to close a netfilter socket, iptables-restore at its
exit, then waits for the kernel to free it: ~20 ms per setup here.)

Anything else (legacy iptables, whose rules are not in nf_tables; another writer's commit in
the window; a batch that also makes chains) leaves no handles, and teardown runs `-D` as before.
A table made again gets another handle, so saved handles are used only with the same table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from netns.firewall.nfnl import NFPROTO_IPV4, NFPROTO_IPV6, Nfnl, NfnlError, Note
from netns.firewall.runner import ExecResult

TABLE = "nat"  # a container's rules are all in nat (Netavark 1.4: DN chain + DNAT jump)
NFPROTO = {4: NFPROTO_IPV4, 6: NFPROTO_IPV6}


class HandleCounter:
    """One setup's batches: port key -> [[family, chain, handle]] of its rules, if every
    family's batch was counted; else nothing (the teardown then lists as before).

    `expected`: per family, how many rules the setup's ports have; a batch that adds fewer
    (planned from the kernel, which had some already) is not counted."""

    def __init__(self, nfnl: Nfnl, expected: dict[int, int]) -> None:
        self.nfnl = nfnl
        self.expected = expected
        self.tables: dict[str, int] = {}
        self.counted: dict[int, list[tuple[str, list[Any]]] | None] = {}

    def run(self, fam: int, lines: dict[str, list[str]], owners: Sequence[str],
            restore: Callable[[], ExecResult]) -> ExecResult:
        """Run one batch; if it is only `-A` lines in nat (one port key each), learn their
        handles from the kernel's notifications of that commit."""
        self.counted[fam] = None
        nat = lines.get(TABLE, [])
        if not (nat and len(nat) == len(owners) == self.expected.get(fam) and all(owners)
                and all(line.startswith("-A ") for line in nat)
                and not any(v for t, v in lines.items() if t != TABLE)):
            return restore()
        try:
            table = self.nfnl.table_handle(TABLE, NFPROTO[fam])
            watch = self.nfnl.watch()
        except NfnlError:
            return restore()
        res = restore()
        try:
            notes = self.nfnl.notes(watch)
        except NfnlError:
            return res
        if res.returncode == 0 and table is not None:
            got = _match(fam, [line.split()[1] for line in nat], notes)
            if got is not None:
                self.tables[str(fam)] = table
                self.counted[fam] = [(owner, [fam, chain, handle]) for owner, (chain, handle)
                                     in zip(owners, got, strict=True)]
        return res

    def records(self, keys: Sequence[str]) -> dict[str, Any]:
        """What to save per port key (nothing if any family's rules went uncounted)."""
        if any(self.counted.get(f) is None for f, n in self.expected.items() if n):
            return {}
        rules: dict[str, list[list[Any]]] = {}
        for got in self.counted.values():
            for owner, rule in got or ():
                rules.setdefault(owner, []).append(rule)
        return {k: {"tables": dict(self.tables), "rules": rules.get(k, [])} for k in keys}


def _match(fam: int, chains: Sequence[str], notes: Sequence[Note]) -> list[tuple[str, int]] | None:
    """The batch's rules as the kernel announced them: exactly one commit in the window (no
    other writer's), adding exactly these rules, to these chains of this family's nat, in
    this order. Anything else: None."""
    added = [n for n in notes if not n.gen]
    if sum(n.gen for n in notes) != 1 or [(n.family, n.table, n.chain) for n in added] != [
            (NFPROTO[fam], TABLE, c) for c in chains] or any(n.handle <= 0 for n in added):
        return None
    return [(n.chain, n.handle) for n in added]


def delete(nfnl: Nfnl, records: Sequence[Any]) -> bool:
    """Delete the saved rules of these records in one transaction; False: not done (the
    records are unknown, from another table, or a rule is gone), so list and `-D` instead."""
    rules: list[tuple[int, str, str, int]] = []
    tables: dict[int, int] = {}
    for rec in records:
        if not isinstance(rec, dict) or not isinstance(rec.get("tables"), dict):
            return False
        try:
            for fam, chain, handle in rec.get("rules", []):
                fam, handle = int(fam), int(handle)
                want = int(rec["tables"][str(fam)])
                if fam not in NFPROTO or tables.setdefault(fam, want) != want:
                    return False
                rules.append((NFPROTO[fam], TABLE, str(chain), handle))
        except (KeyError, TypeError, ValueError):
            return False
    try:
        for fam, want in tables.items():
            if nfnl.table_handle(TABLE, NFPROTO[fam]) != want:
                return False  # the table was made again: the handles mean other rules now
        nfnl.delete_rules(rules)
    except NfnlError:
        return False
    return True
