"""burrow-dns's caps from the environment, and the stats file's contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from netns import statefiles
from netns.dns.limits import SHED_KINDS, LimitError, Limits, Stats


def test_limits_from_env_override_and_refuse_nonsense() -> None:
    lim = Limits.from_env({"BURROW_DNS_TCP_TOTAL": "8", "BURROW_DNS_TCP_TIMEOUT": "0.5",
                           "BURROW_DNS_UPSTREAM_TIMEOUT": "1"})  # not a limit: ignored here
    assert lim.tcp_total == 8 and lim.tcp_timeout == 0.5 and lim.tcp_per_client == 16
    for bad in ("0", "-3", "many", "1e999x"):
        with pytest.raises(LimitError, match="BURROW_DNS_PENDING_TOTAL"):
            Limits.from_env({"BURROW_DNS_PENDING_TOTAL": bad})


def test_stats_file_is_rewritten_only_when_something_changed(tmp_path: Path) -> None:
    path = tmp_path / statefiles.DNS_STATS
    stats = Stats(str(path), Limits())
    gauge = {"tcp_connections": 0}
    stats.gauges = lambda: dict(gauge)
    stats.write()
    first = json.loads(path.read_text())
    assert set(first["shed"]) == set(SHED_KINDS) and first["tcp_connections"] == 0
    path.unlink()
    stats.write()
    assert not path.exists()  # nothing changed: no rewrite
    stats.shed("tcp_per_client", "10.0.0.9")
    stats.write()
    assert json.loads(path.read_text())["shed"]["tcp_per_client"] == 1
    stats.fault("udp", ValueError("boom"))
    gauge["tcp_connections"] = 3
    stats.write()
    data = json.loads(path.read_text())
    assert data["faults"] == 1 and data["tcp_connections"] == 3
    assert statefiles.DNS_STATS.startswith(".")  # never read as a network by any DNS server
    stats.remove()
    assert not path.exists()
