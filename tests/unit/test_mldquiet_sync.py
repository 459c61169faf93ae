"""netns/mldquiet.sync: the table follows what the last look saw, looking again after each act
(pure: the bridge looks and nft are stand-ins; tests/integration/test_engine_mld_quiet.py runs
the real race between two config dirs)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from netns import mldquiet
from netns.firewall.runner import ExecResult


def _run(sync_looks: list[bool | OSError]) -> list[str]:
    """The acts ("make"/"delete") sync does when its successive looks see `sync_looks`."""
    looks: Iterator[bool | OSError] = iter(sync_looks)
    acts: list[str] = []

    def look() -> bool:
        seen = next(looks)
        if isinstance(seen, OSError):
            raise seen
        return seen

    def runner(argv: list[str], stdin: str) -> ExecResult:
        first = json.loads(stdin)["nftables"][0]
        acts.append("delete" if "delete" in first else "make")
        return ExecResult(0, "", "")

    mldquiet.sync(look, runner)
    return acts


@pytest.mark.parametrize(("looks", "acts"), [
    ([True, True], ["make"]),
    ([False, False], ["delete"]),
    # Another engine made a bridge between the look and the delete: made again.
    ([False, True, True], ["delete", "make"]),
    # ... and deleted it again before the second look settled.
    ([False, True, False, False], ["delete", "make", "delete"]),
    # A failed look counts as a bridge left: an extra table drops nothing.
    ([OSError(1, "x"), True], ["make"]),
    ([False, OSError(1, "x"), True], ["delete", "make"]),
])
def test_sync_acts_on_each_look_until_two_agree(looks: list[bool | OSError],
                                                acts: list[str]) -> None:
    assert _run(looks) == acts


def test_sync_gives_up_with_the_table_kept_when_bridges_keep_changing() -> None:
    flips: list[bool | OSError] = [i % 2 == 0 for i in range(9)]
    acts = _run(flips)
    assert len(acts) == 9 and acts[-1] == "make"
