"""The same Podman scenario on burrow and on Debian's netavark 1.4, StatusBlocks compared.

Both worlds are rootful and private (podman_env.RootfulWorld) and run Podman through a logging
wrapper in helper_binaries_dir (like samples/tooling/netavark-wrapper.py). Every setup and
teardown Podman makes is recorded; the sequence of (command, exit code) and each setup's
StatusBlock must match field by field, except MACs the backend made up itself (no static_mac).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.podman_env import IMAGE, RootfulWorld, read_records

pytestmark = [pytest.mark.e2e, pytest.mark.root]


def scenario(w: RootfulWorld) -> None:
    p = w.podman
    p("network", "create", "--subnet", "10.89.7.0/24", "--subnet", "fd89:7::/64", "n1")
    p("network", "create", "--subnet", "10.89.8.0/24", "n2")
    p("network", "create", "--disable-dns", "--subnet", "10.89.9.0/24", "n3")
    p("run", "-d", "--name", "pda",
      "--network", "n1:ip=10.89.7.10,ip=fd89:7::10,mac=92:d0:c6:0a:29:10,alias=pda-alias1",
      "--network", "n2:ip=10.89.8.10,alias=pda-alias2",
      "-p", "127.0.0.1:18080:80", "-p", "127.0.0.1:18053:53/udp",
      "-p", "127.0.0.1:18100-18102:8100-8102", IMAGE, "sleep", "600")
    p("run", "-d", "--name", "pdb", "--network", "n1", "--network-alias", "pdb-alias", IMAGE,
      "sleep", "600")
    p("network", "connect", "--ip", "10.89.9.50", "--alias", "pdb-alias3", "n3", "pdb")
    p("network", "disconnect", "n3", "pdb")
    p("network", "reload", "pda")
    p("run", "--rm", "--name", "pdr", "--network", "n3", IMAGE, "true")
    p("stop", "-t", "0", "pda", "pdb")
    p("rm", "pda", "pdb")


def normalise(rec: dict[str, Any]) -> Any:
    """The StatusBlock with generated MACs blanked.

    A MAC Podman asked for (static_mac) must come back unchanged; it is compared as
    "<as-requested>" because on reload Podman asks for the MAC each backend generated before.
    """
    out = copy.deepcopy(rec["stdout"])
    if rec["command"] != "setup" or not isinstance(out, dict) or "error" in out:
        return out
    nets = rec["stdin"]["networks"]
    for name, block in out.items():
        static = nets[name].get("static_mac")
        # Podman 4.3 numbers eth0/eth1 in Go map order (random per run): compare the name
        # against what Podman asked for, not across worlds.
        ifaces = block.get("interfaces", {})
        assert list(ifaces) == [nets[name]["interface_name"]], (ifaces, nets[name])
        block["interfaces"] = {"<as-requested>": next(iter(ifaces.values()))}
        for iface in block["interfaces"].values():
            if not static:
                iface["mac_address"] = "<generated>"
            elif iface["mac_address"] == static:
                iface["mac_address"] = "<as-requested>"
    return out


@pytest.fixture(scope="module")
def records(podman_rootfs: Path, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[dict[str, list[dict[str, Any]]]]:
    got: dict[str, list[dict[str, Any]]] = {}
    for backend in ("burrow", "netavark"):
        w = RootfulWorld(tmp_path_factory.mktemp(backend), podman_rootfs, backend=backend, wrap=True)
        try:
            scenario(w)
        finally:
            w.close()
        got[backend] = read_records(w.logdir)
    yield got


def key(r: dict[str, Any]) -> tuple[str, str, list[str]]:
    stdin = r["stdin"] or {}
    return r["command"], stdin.get("container_name", ""), sorted(stdin.get("networks", {}))


def in_order(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Calls ordered by container (the two `podman stop`s tear down concurrently)."""
    return sorted(recs, key=lambda r: (key(r)[1], recs.index(r)))


def test_same_calls_and_exit_codes(records: dict[str, list[dict[str, Any]]]) -> None:
    calls = {b: [(*key(r), r["exit_code"]) for r in in_order(recs)] for b, recs in records.items()}
    assert calls["burrow"] == calls["netavark"]
    assert [c[0] for c in calls["burrow"]].count("setup") >= 5
    assert all(c[3] == 0 for c in calls["burrow"])


def test_statusblocks_match_field_by_field(records: dict[str, list[dict[str, Any]]]) -> None:
    pairs = list(zip(in_order(records["burrow"]), in_order(records["netavark"]), strict=True))
    compared = 0
    for i, (b, n) in enumerate(pairs):
        assert normalise(b) == normalise(n), f"call {i} ({b['command']}) differs"
        compared += b["command"] == "setup"
    assert compared >= 5
    # The static MAC came back as given, and generated ones are well-formed unicast MACs.
    for r in records["burrow"]:
        if r["command"] == "setup":
            for name, block in r["stdout"].items():
                for iface in block["interfaces"].values():
                    mac = iface["mac_address"]
                    static = r["stdin"]["networks"][name].get("static_mac")
                    assert mac == static if static else int(mac.split(":")[0], 16) & 1 == 0
