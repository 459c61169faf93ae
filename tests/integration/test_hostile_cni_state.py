"""burrow-cni's state (attachment records, host-local IPAM files) replaced by a FIFO or a
symlink, tried with real ADD/DEL calls in a throwaway host netns. Before: a FIFO as the
container's attachment record or as last_reserved_ip.0 hung ADD for good (and so the pod's
start); a symlink planted as the record's temporary name had its target overwritten."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from netns import statefiles
from tests.cni_util import PLUGIN, CniWorld, cid
from tests.nsutil import Netns

pytestmark = pytest.mark.root


@pytest.fixture
def world(host_ns: Netns, tmp_path: Path) -> Iterator[CniWorld]:
    if not PLUGIN.exists():
        pytest.skip("environment: burrow-cni is not installed (run scripts/install)")
    yield CniWorld(host_ns, tmp_path)


def _record(world: CniWorld, c: str) -> Path:
    return world.state_dir / statefiles.CNI_ATTACHMENTS_DIR / world.name / f"{c}_eth0.json"


def _add_and_del(world: CniWorld, ctr: Netns, c: str) -> None:
    conf = world.conf()
    try:
        world.add(ctr, conf, c)
        world.delete(ctr, conf, c)
    except subprocess.TimeoutExpired:
        pytest.fail("burrow-cni blocked on a state file")


@pytest.mark.parametrize("where", ["record", "last_reserved"])
def test_a_fifo_as_a_state_file_does_not_block_add(
    world: CniWorld, netns_factory: Callable[[], Netns], where: str
) -> None:
    c = cid()
    path = (_record(world, c) if where == "record"
            else world.data_dir / world.name / f"{statefiles.CNI_IPAM_LAST}0")
    path.parent.mkdir(parents=True)
    os.mkfifo(path)
    _add_and_del(world, netns_factory(), c)


def test_a_symlink_planted_as_the_records_temporary_is_not_followed(
    world: CniWorld, netns_factory: Callable[[], Netns], tmp_path: Path
) -> None:
    c = cid()
    target = tmp_path / "precious"
    target.write_text("precious\n")
    rec = _record(world, c)
    rec.parent.mkdir(parents=True)
    for name in (f"{rec.name}.tmp", f".{rec.name}.tmp"):  # the old and the new temporary name
        (rec.parent / name).symlink_to(target)
    _add_and_del(world, netns_factory(), c)
    assert target.read_text() == "precious\n"
