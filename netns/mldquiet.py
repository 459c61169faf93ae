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

The table is made (idempotently) when a setup makes such a bridge, and deleted when a
teardown deleted one and no bridge of the group is left in the netns. It is an optimisation:
failing to make or delete it is logged, never a setup or teardown error.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from typing import Any

from netns.firewall.libnft import LibNftables
from netns.firewall.runner import ExecResult, Runner, error_text, subprocess_runner

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


def _run(batch: Json, runner: Runner | None) -> ExecResult | None:
    if runner is None:
        log.debug("no nft: MLD reports between container ports are not filtered")
        return None
    return runner(list(NFT_ARGV), json.dumps(batch))


def ensure(runner: Runner | None = None) -> None:
    """Make the table if it is not there (in the calling thread's netns)."""
    res = _run(make_batch(), runner or _runner())
    if res is not None and res.returncode != 0 and "File exists" not in res.stderr:
        log.warning("could not add the MLD filter table %s %s: %s", FAMILY, TABLE, error_text(res))


def release_if_unused(group_bridge_left: Callable[[], bool], runner: Runner | None = None) -> None:
    """Delete the table when no bridge of QUIET_GROUP is left (after a bridge was deleted)."""
    try:
        if group_bridge_left():
            return
    except OSError as exc:
        log.warning("could not list bridges (MLD filter table kept): %s", exc)
        return
    res = _run(delete_batch(), runner or _runner())
    if res is not None and res.returncode != 0 and "No such file" not in res.stderr:
        log.warning("could not delete the MLD filter table %s %s: %s", FAMILY, TABLE,
                    error_text(res))
