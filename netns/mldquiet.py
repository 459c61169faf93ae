"""MLD reports stay off the other containers' ports of a bridge burrow made (issue 15).

A container's kernel sends MLDv2 reports for its solicited-node groups when its interface
comes up: two state-change reports and two initial ones (robustness 2; `net.ipv6.mld_qrv`
would lower it, but the kernel has that knob in the init netns only). No querier is on the
bridge, so the bridge floods each report to every port: with N containers, 4 x N copies per
setup, each through another container's receive path (scripts/bench_scale_floor.py
`--flood-cost` measures one; `--variant mlddrop` the setups). Hosts ignore MLDv2 reports
(RFC 3810 has no report suppression); only multicast routers and snooping switches use them.

So a bridge-family table drops MLD reports (v1 131, done 132, v2 143) in the bridge's forward
hook, between two ports that are both burrow's container ports: the bridge device itself still
gets them first (local delivery and multicast snooping come before forwarding), and ports of
other bridges, or a port burrow did not make (an uplink enslaved by hand), are untouched.
Those ports and bridges are told apart by the device group QUIET_GROUP, which burrow gives a
managed bridge it makes and each container's host end on it in the request that makes them
(this kernel may lack `meta ibrname`, nft_meta_bridge).

The table is one per netns, shared by every engine there whatever its config dir (rootful
Podman's netavark drop-in and a `burrow` CLI, two concurrent calls), and each config dir has
its own lock. So its presence follows the kernel alone, never an engine's own state: after a
setup made a bridge of the group, and after a teardown (or a rollback) deleted one, `sync`
makes the table present exactly when a bridge of the group is in the netns. A check then an
act is not enough: between engine A seeing no bridge left and deleting the table, engine B
may make a bridge and find the table still there. So `sync` looks again after acting and acts
again until what it did matches what is there. Every bridge change is followed by its maker's
`sync`, so the last act in the netns is one whose look came after every change: the table
ends right without a lock shared across config dirs (no file every engine could agree on,
rootful and rootless alike).
What is left to a crash: one between a bridge's deletion and the `sync` leaves the table with
no port it can match (harmless), one between a bridge's making and the `sync` leaves that
bridge unfiltered; either is put right by the next `sync` in the netns. It is an
optimisation: failing to list bridges, make or delete the table is logged, never a setup or
teardown error, and a failed listing counts as a bridge left (an extra table drops nothing).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from typing import Any

from netns.firewall.libnft import LibNftables
from netns.firewall.runner import Runner, error_text, subprocess_runner

log = logging.getLogger("netns.mldquiet")
QUIET_GROUP = 0x6275  # "bu": a managed bridge burrow made, and its container ports
FAMILY, TABLE, CHAIN = "bridge", "burrow_quiet", "forward"
MLD_TYPES = ("mld-listener-report", "mld-listener-done", "mld2-listener-report")
NFT_ARGV = ("nft", "-j", "-f", "-")

Json = dict[str, Any]


def _table() -> Json:
    return {"family": FAMILY, "name": TABLE}


def _group(key: str) -> Json:
    return {"match": {"op": "==", "left": {"meta": {"key": key}}, "right": QUIET_GROUP}}


def make_batch() -> Json:
    """The table, made only if absent (`create table` fails the batch otherwise)."""
    rule = [_group("iifgroup"), _group("oifgroup"),
            {"match": {"op": "==", "left": {"payload": {"protocol": "icmpv6", "field": "type"}},
                       "right": {"set": list(MLD_TYPES)}}},
            {"drop": None}]
    return {"nftables": [
        {"create": {"table": _table()}},
        {"add": {"chain": {"family": FAMILY, "table": TABLE, "name": CHAIN, "type": "filter",
                           "hook": "forward", "prio": 0, "policy": "accept"}}},
        {"add": {"rule": {"family": FAMILY, "table": TABLE, "chain": CHAIN, "expr": rule}}},
    ]}


def delete_batch() -> Json:
    return {"nftables": [{"delete": {"table": _table()}}]}


def _runner() -> Runner | None:
    lib = LibNftables.load()
    if lib is not None:
        return lib
    return subprocess_runner if shutil.which("nft") else None


def _set(present: bool, runner: Runner) -> None:
    """Make the table (if absent) or delete it (if there)."""
    if present:
        res = runner(list(NFT_ARGV), json.dumps(make_batch()))
        if res.returncode != 0 and "File exists" not in res.stderr:
            log.warning("could not add the MLD filter table %s %s: %s", FAMILY, TABLE,
                        error_text(res))
        return
    res = runner(list(NFT_ARGV), json.dumps(delete_batch()))
    if res.returncode != 0 and "No such file" not in res.stderr:
        log.warning("could not delete the MLD filter table %s %s: %s", FAMILY, TABLE,
                    error_text(res))


def _bridge_left(group_bridge_left: Callable[[], bool]) -> bool:
    try:
        return group_bridge_left()
    except OSError as exc:
        log.warning("could not list bridges (MLD filter table kept): %s", exc)
        return True


def sync(group_bridge_left: Callable[[], bool], runner: Runner | None = None,
         rounds: int = 8) -> None:
    """Make the table present exactly when a bridge of QUIET_GROUP is in the calling thread's
    netns; called after this engine made or deleted such a bridge. Looks, acts, and looks again
    until both looks agree (see the module's doc: another engine may change bridges between)."""
    runner = runner or _runner()
    if runner is None:
        log.debug("no nft: MLD reports between container ports are not filtered")
        return
    want = _bridge_left(group_bridge_left)
    for _ in range(rounds):
        _set(want, runner)
        seen = _bridge_left(group_bridge_left)
        if seen == want:
            return
        want = seen
    # Bridges of the group came and went on every look: keep the table (it drops nothing
    # without two ports of the group); the next sync in this netns decides again.
    _set(True, runner)
    log.warning("bridges kept changing while syncing the MLD filter table: table kept")
