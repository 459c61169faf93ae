"""The scale floor (scripts/bench_scale_floor.py) builds what a burrow setup builds.

The floor's rows say how much of burrow's setup growth the kernel's own objects cost; that
holds only if its minimal client makes the same objects. Two containers each way, in their own
throwaway host namespaces: the same `inet netavark` ruleset (chains and rules in order), the
same container routes, addresses and sysctls, and the same bridge ports (hairpin, no IPv6
addresses), neighbours and bridge sysctls, up to MACs, names and indexes the kernel picks.
"""

from __future__ import annotations

import pytest

from scripts import bench_scale_floor


@pytest.mark.parametrize("dual", [False, True], ids=["v4", "dual"])
def test_floor_makes_what_burrow_makes(dual: bool, capsys: pytest.CaptureFixture[str]) -> None:
    same = bench_scale_floor.check(dual)
    out = capsys.readouterr().out
    assert same, out
    assert out.count(": same") == 4  # ruleset, two containers, host
