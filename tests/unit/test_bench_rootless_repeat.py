"""scripts/bench_rootless.py --repeat and --strace: the pure parts that turn rounds into
paired ratios, and the parse of `strace -c` (on a real strace run)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_rootless", ROOT / "scripts" /
                                                  "bench_rootless.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_rootless", mod)
    spec.loader.exec_module(mod)
    return mod


def row(name: str, gbps: float, rate: float, rtt: float) -> tuple[object, ...]:
    return (name, gbps, [gbps], 1.0, rate, rtt)


def test_ratios_are_paired_within_a_round_and_summarised_by_their_median() -> None:
    br = bench()
    # Round 1 is twice as fast for everyone as round 2: the paired ratio does not see it.
    rounds = [[row(br.BURROW, 10, 4000, 50), row(br.PASTA, 5, 2000, 100)],
              [row(br.BURROW, 5, 2000, 100), row(br.PASTA, 2.5, 1000, 200)],
              [row(br.BURROW, 6, 900, 80), row(br.PASTA, 4, 1000, 40)]]
    per = [br.pair_ratios(r)[(br.BURROW, br.PASTA)] for r in rounds]
    assert per == [(2.0, 2.0, 0.5), (2.0, 2.0, 0.5), (1.5, 0.9, 2.0)]
    # No pair without both rows.
    assert br.pair_ratios([row(br.BURROW, 1, 1, 1)]) == {}
    assert br.spread([2.0, 2.0, 0.9]).startswith("2.00 [0.90-2.00]")
    assert "IQR" in br.spread([1.0, 2.0, 3.0, 4.0])
    med = {r[0]: r for r in br.median_rows(rounds)}
    assert med[br.BURROW][4] == 2000 and med[br.PASTA][5] == 100
    assert med[br.BURROW][2] == [10, 5, 6]  # every round's iperf3 runs listed


def test_per_unit_scales_counters_to_one_connection() -> None:
    br = bench()
    # 2 s user, 1 s sys, 300 switches, 3e9 ns on CPU, 1.5e9 ns waiting, over 1000 connections
    assert br.per_unit([2.0, 1.0, 300, 3e9, 1.5e9], 1000) == pytest.approx(
        (2000.0, 1000.0, 0.3, 3000.0, 1500.0))


@pytest.mark.skipif(shutil.which("strace") is None, reason="no strace on this machine")
def test_strace_counts_reads_the_calls_column_by_name(tmp_path: Path) -> None:
    br = bench()
    out = tmp_path / "c.txt"
    subprocess.run(["strace", "-c", "-qq", "-o", str(out), "sh", "-c",
                    "exec 3</dev/null; exec 4</dev/null; exec 5</dev/null"], check=True)
    got = br.strace_counts(out)
    assert got["execve"] == 1
    assert got["openat"] >= 3  # the three redirections at least
    assert "total" not in got
    assert not out.exists()
