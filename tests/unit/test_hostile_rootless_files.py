"""The per-user world's JSON records (rootless/paths.py) with a FIFO or a symlink where a
record or its temporary goes. Before: reading a FIFO record blocked for good (`burrow` hung);
a symlink planted as a write's temporary name had its target overwritten."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from rootless.paths import read_json, write_json
from tests import alarm


@pytest.fixture
def hang_guard() -> Iterator[None]:
    with alarm.hang_guard(10, "blocked on a record for 10 s"):
        yield


def test_a_fifo_record_reads_as_absent_without_blocking(hang_guard: None, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "net.json")
    assert read_json(tmp_path / "net.json") is None


def test_a_symlinked_record_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "other.json").write_text('{"name": "theirs"}')
    (tmp_path / "net.json").symlink_to(tmp_path / "other.json")
    assert read_json(tmp_path / "net.json") is None


def test_a_symlink_planted_as_the_temporary_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("precious\n")
    (tmp_path / f".net.json.{os.getpid()}.tmp").symlink_to(target)
    write_json(tmp_path / "net.json", {"name": "mine"})
    assert target.read_text() == "precious\n"
    assert read_json(tmp_path / "net.json") == {"name": "mine"}


@pytest.mark.parametrize("subnet", ["127.0.0.0/24", "::/0", "224.1.0.0/24", "::ffff:10.0.0.0/120"])
def test_network_create_refuses_a_subnet_the_engine_refuses(subnet: str) -> None:
    """`burrow network create --subnet 127.0.0.0/24` saved a network whose every sandbox
    setup then failed (netns.schema.usable_subnet)."""
    from netns.errors import BurrowError
    from rootless.netconf import NetworkRequest, make_network

    with pytest.raises(BurrowError, match="invalid --subnet .*use a private range"):
        make_network(NetworkRequest("x", subnets=(subnet,)), {}, 65520)
