"""Where burrow keeps things (rootless.paths, rootless.store's migration): networks in the data
directory, runtime state in the runtime directory, a set-but-missing XDG_RUNTIME_DIR refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from netns.errors import BurrowError
from netns.rundir import user_runtime_dir
from rootless.paths import ROOTFUL_DATA_DIR, ROOTFUL_STATE_DIR, StatePaths
from rootless.settings import Settings
from rootless.store import Store


def test_networks_go_to_the_data_dir_runtime_state_to_the_runtime_dir(tmp_path: Path) -> None:
    env = {"XDG_RUNTIME_DIR": str(tmp_path / "run"), "XDG_DATA_HOME": str(tmp_path / "share")}
    (tmp_path / "run").mkdir()
    p = StatePaths.for_user(env)
    assert p.root == tmp_path / "run" / "burrow"
    assert p.networks_dir == tmp_path / "share" / "burrow" / "networks"
    assert p.sandboxes_dir == tmp_path / "run" / "burrow" / "sandboxes"
    # XDG_DATA_HOME unset or relative (the XDG spec: ignore it): ~/.local/share.
    for data in ({}, {"XDG_DATA_HOME": "rel/share"}):
        q = StatePaths.for_user({"XDG_RUNTIME_DIR": env["XDG_RUNTIME_DIR"], "HOME": "/home/u",
                                 **data})
        assert q.networks_dir == Path("/home/u/.local/share/burrow/networks")


def test_set_but_missing_runtime_dir_is_an_error_naming_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "gone"
    with pytest.raises(BurrowError) as e:
        StatePaths.for_user({"XDG_RUNTIME_DIR": str(missing)})
    msg = str(e.value)
    assert f"XDG_RUNTIME_DIR={missing} does not exist" in msg
    assert f"mkdir -m 700 {missing}" in msg and "unset XDG_RUNTIME_DIR" in msg
    with pytest.raises(BurrowError, match="not an absolute path"):
        StatePaths.for_user({"XDG_RUNTIME_DIR": "relative/run"})
    assert not missing.exists()  # nothing made anywhere, no fallback chosen


def test_unset_runtime_dir_as_podman(tmp_path: Path) -> None:
    run_user = tmp_path / "run-user"
    run_user.mkdir()
    uid = os.getuid()
    # No /run/user/<uid>: none (the state goes to /tmp/burrow-<uid>, made 0700 by ensure()).
    assert user_runtime_dir({}, uid, str(run_user)) is None
    mine = run_user / str(uid)
    mine.mkdir(mode=0o700)
    assert user_runtime_dir({}, uid, str(run_user)) == str(mine)
    mine.chmod(0o777)  # writable by others: not trusted, as containers/storage
    assert user_runtime_dir({}, uid, str(run_user)) is None
    assert user_runtime_dir({}, uid + 1, str(run_user)) is None  # someone else's uid


def test_the_one_choice_of_places() -> None:
    env = {"XDG_RUNTIME_DIR": "/", "HOME": "/home/u"}
    assert StatePaths.choose(None, None, rootful=True, env=env) == StatePaths(
        ROOTFUL_STATE_DIR, ROOTFUL_DATA_DIR)
    assert StatePaths.choose(None, None, rootful=True, env=env).networks_dir == Path(
        "/etc/burrow/networks")
    # BURROW_STATE_DIR alone: one self-contained directory (networks in it too).
    solo = StatePaths.choose(Path("/s"), None, rootful=False, env=env)
    assert solo.networks_dir == Path("/s/networks") and solo.legacy_networks_dirs() == []
    both = StatePaths.choose(Path("/s"), Path("/d"), rootful=True, env=env)
    assert both.networks_dir == Path("/d/networks")
    user = StatePaths.choose(None, Path("/d"), rootful=False, env=env)
    assert user.root == Path("/burrow") and user.networks_dir == Path("/d/networks")
    s = Settings.from_env({"BURROW_DATA_DIR": "/d", "XDG_DATA_HOME": "/x", "HOME": "/h"})
    assert s.data_dir == Path("/d") and s.environ() == {"XDG_DATA_HOME": "/x", "HOME": "/h"}
    with pytest.raises(BurrowError, match="BURROW_DATA_DIR='d' is relative"):
        Settings.from_env({"BURROW_DATA_DIR": "d"})


def _net(name: str, subnet: str = "10.90.0.0/24") -> dict[str, object]:
    return {"name": name, "driver": "bridge", "subnets": [{"subnet": subnet}]}


def test_old_networks_are_moved_once_with_a_message(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    # The layout of an older burrow: everything, networks included, in the runtime dir.
    (tmp_path / "run").mkdir()
    old = Store(StatePaths(tmp_path / "run" / "burrow").ensure())
    old.save_network(_net("web"))
    old.save_network(_net("db", "10.91.0.0/24"))
    new = Store(StatePaths(tmp_path / "run" / "burrow", tmp_path / "share" / "burrow"))
    assert sorted(new.networks()) == ["db", "web"]
    err = capsys.readouterr().err
    assert "moved network(s) db, web from" in err and str(tmp_path / "share") in err
    assert not (tmp_path / "run" / "burrow" / "networks").exists()
    assert (tmp_path / "share" / "burrow" / "networks" / "web.json").is_file()
    assert sorted(new.networks()) == ["db", "web"]
    assert capsys.readouterr().err == ""  # once


def test_migration_never_overwrites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = Store(StatePaths(tmp_path / "run").ensure())
    old.save_network(_net("web", "10.92.0.0/24"))
    old.save_network(_net("same"))
    new = Store(StatePaths(tmp_path / "run", tmp_path / "share"))
    new.paths.ensure_data()
    for name in ("web", "same"):  # already there in the new place (written as an older file)
        Store(StatePaths(tmp_path / "share")).save_network(_net(name))
    capsys.readouterr()
    nets = new.networks()
    assert nets["web"]["subnets"] == [{"subnet": "10.90.0.0/24"}]  # the new one is kept
    err = capsys.readouterr().err
    assert "network(s) web in" in err and "web.json.conflict" not in err
    assert (tmp_path / "run" / "networks" / "web.json.conflict").is_file()
    assert "moved network(s) same" in err  # identical: just dropped from the old place
    new.networks()
    assert capsys.readouterr().err == ""
