"""The iptables driver's container rules by handle, where iptables is iptables-nft.

iptables-nft keeps Netavark 1.4's rules as nf_tables rules in tables `ip nat` / `ip6 nat`,
and `iptables-restore -D <spec>` finds each by fetching and decoding its whole chain: with N
containers, NETAVARK-HOSTPORT-DNAT holds N jumps and NETAVARK-DN-<H> 3N rules, so every
teardown grew with N. The nftables backend's trick works here too (firewall/nfnl.py): a
container's `-A` lines go in one batch between two probes of the nat table's handle counter;
exactly R + 1 apart means its R rules got the handles in between, in line order. Teardown
then deletes those handles in one nfnetlink transaction: nothing listed, no exec.

Anything else (legacy iptables, whose rules are not in nf_tables; another writer between the
probes; a batch that also makes chains) leaves no handles, and teardown runs `-D` as before.
A table made again gets another handle, so saved handles are used only with the same table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from netns.firewall.nfnl import NFPROTO_IPV4, NFPROTO_IPV6, Nfnl, NfnlError

TABLE = "nat"  # a container's rules are all in nat (Netavark 1.4: DN chain + DNAT jump)
NFPROTO = {4: NFPROTO_IPV4, 6: NFPROTO_IPV6}


class HandleCounter:
    """One setup's probes: port key -> [[family, chain, handle]] of its rules, if every
    family's batch was counted; else nothing (the teardown then lists as before).

    `expected`: per family, how many rules the setup's ports have; a batch that adds fewer
    (planned from the kernel, which had some already) is not counted."""

    def __init__(self, nfnl: Nfnl, probe_chain: str, expected: dict[int, int]) -> None:
        self.nfnl = nfnl
        self.chain = probe_chain
        self.expected = expected
        self.tables: dict[str, int] = {}
        self.counted: dict[int, list[tuple[str, list[Any]]] | None] = {}

    def before(self, fam: int, lines: dict[str, list[str]], owners: Sequence[str]) -> int | None:
        """The counter before a batch of `-A` lines in nat only (one port key per line)."""
        self.counted[fam] = None  # until after() has seen this batch's exact gap
        nat = lines.get(TABLE, [])
        if not (nat and len(nat) == len(owners) == self.expected.get(fam) and all(owners)
                and all(line.startswith("-A ") for line in nat)
                and not any(v for t, v in lines.items() if t != TABLE)):
            return None
        try:
            table = self.nfnl.table_handle(TABLE, NFPROTO[fam])
            start = self.nfnl.next_handle(TABLE, self.chain, NFPROTO[fam])
        except NfnlError:
            return None
        if table is None:
            return None
        self.tables[str(fam)] = table
        return start

    def after(self, fam: int, lines: dict[str, list[str]], owners: Sequence[str],
              start: int | None) -> None:
        """After the batch went in: its rules' handles if the gap is exactly theirs."""
        if start is None:
            return
        try:
            end = self.nfnl.next_handle(TABLE, self.chain, NFPROTO[fam])
        except NfnlError:
            return
        nat = lines[TABLE]
        if end - start != len(nat) + 1:
            return  # someone else's change in between (or not iptables-nft)
        self.counted[fam] = [(owner, [fam, line.split()[1], start + 1 + i])
                             for i, (line, owner) in enumerate(zip(nat, owners, strict=True))]

    def records(self, keys: Sequence[str]) -> dict[str, Any]:
        """What to save per port key (nothing if any family's rules went uncounted)."""
        if any(self.counted.get(f) is None for f, n in self.expected.items() if n):
            return {}
        rules: dict[str, list[list[Any]]] = {}
        for got in self.counted.values():
            for owner, rule in got or ():
                rules.setdefault(owner, []).append(rule)
        return {k: {"tables": dict(self.tables), "rules": rules.get(k, [])} for k in keys}


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
