"""`burrow podman --user` with a custom XDG_CONFIG_HOME: conmon runs a stopped container's
`podman container cleanup` (its network teardown) with HOME but not XDG_CONFIG_HOME, so that
cleanup reads ~/.config/containers. `enable --user` writes the drop-in there too, `disable`
removes both, and `status` warns when setup and cleanup would run different netavarks.
Real files in a temporary HOME; Podman's lookup is rootless.podman.config_chain/find_helper."""

from __future__ import annotations

import os
from pathlib import Path

from rootless import podman


def xdg_env(home: Path) -> dict[str, str]:
    return {"HOME": str(home), "XDG_CONFIG_HOME": str(home / "xdg"),
            "XDG_DATA_HOME": str(home / "data")}


def user_scope(env: dict[str, str]) -> podman.Scope:
    return podman.resolve_scope(False, True, None, None, env, euid=1000)


def cleanup_netavark(env: dict[str, str]) -> Path | None:
    """What the cleanup finds: Podman's lookup run on the environment conmon gives it."""
    chain = podman.config_chain(True, podman.cleanup_env(env))
    return podman.find_helper("netavark", podman.merge(chain).helper_binaries_dir)


# -- the pure decision --------------------------------------------------------------------
def test_cleanup_reads_home_config_when_xdg_config_home_differs(tmp_path: Path) -> None:
    env = xdg_env(tmp_path)
    assert podman.cleanup_env({**env, "PATH": "/bin"}) == {"HOME": str(tmp_path),
                                                            "XDG_CONFIG_HOME": ""}
    want = tmp_path / ".config" / "containers" / "containers.conf.d"
    assert podman.cleanup_conf_dir(env) == want


def test_no_second_place_when_both_read_the_same_files(tmp_path: Path) -> None:
    home = str(tmp_path)
    assert podman.cleanup_conf_dir({"HOME": home}) is None  # XDG_CONFIG_HOME unset
    assert podman.cleanup_conf_dir({"HOME": home, "XDG_CONFIG_HOME": ""}) is None
    assert podman.cleanup_conf_dir({"HOME": home, "XDG_CONFIG_HOME": f"{home}/.config"}) is None
    assert podman.cleanup_conf_dir({"HOME": home, "XDG_CONFIG_HOME": "rel/cfg"}) is None
    (tmp_path / ".config").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / ".config")
    assert podman.cleanup_conf_dir({"HOME": home, "XDG_CONFIG_HOME": f"{home}/link"}) is None
    # CONTAINERS_CONF: conmon passes it on, and both read only that file.
    assert podman.cleanup_conf_dir({**xdg_env(tmp_path), "CONTAINERS_CONF": "/x.conf"}) is None


def test_scope_writes_the_second_place_only_for_the_standard_dir(tmp_path: Path) -> None:
    env = xdg_env(tmp_path)
    assert user_scope(env).cleanup_conf_dir == podman.cleanup_conf_dir(env)
    std = str(tmp_path / "xdg" / "containers" / "containers.conf.d")
    assert podman.resolve_scope(False, True, std, None, env, euid=1000).cleanup_conf_dir \
        == podman.cleanup_conf_dir(env)
    # --conf-dir elsewhere is the caller's own choice: only there.
    redirected = podman.resolve_scope(False, True, str(tmp_path / "mine"), None, env, euid=1000)
    assert redirected.cleanup_conf_dir is None
    system = podman.resolve_scope(True, False, str(tmp_path / "sys"), None, env, euid=0)
    assert system.cleanup_conf_dir is None


# -- enable / status / disable -------------------------------------------------------------
def test_enable_with_custom_xdg_config_home_reaches_the_cleanup(tmp_path: Path) -> None:
    env = xdg_env(tmp_path)
    scope = user_scope(env)
    assert scope.cleanup_dropin is not None
    change = podman.plan_enable(scope, env)
    lines = "\n".join(change.lines())
    assert f"create {scope.dropin}:" in lines and f"create {scope.cleanup_dropin}:" in lines
    assert "HOME but not XDG_CONFIG_HOME" in lines  # says why it writes a second file
    podman.apply(change)

    assert scope.dropin.is_file() and scope.cleanup_dropin.is_file()
    found = cleanup_netavark(env)
    assert found is not None and podman.is_burrow(found) and found.parent == scope.helper_dir
    info = podman.collect_status(scope, env)
    assert info["podman_uses_burrow"] and info["cleanup"]["uses_burrow"]
    assert podman.cleanup_mismatch(info) is None
    assert podman.plan_enable(scope, env).empty  # idempotent

    podman.apply(podman.plan_disable(scope))
    assert not scope.dropin.exists() and not scope.cleanup_dropin.exists()
    found = cleanup_netavark(env)
    assert found is None or not podman.is_burrow(found)


def test_status_warns_about_an_enable_the_cleanup_does_not_read(tmp_path: Path) -> None:
    """What an older burrow's `enable --user` left: the drop-in under $XDG_CONFIG_HOME only.
    Status says so and names the fix; running that fix makes the cleanup use burrow too."""
    env = xdg_env(tmp_path)
    scope = user_scope(env)
    only_xdg = podman.Scope(scope.name, scope.conf_dir, scope.helper_dir)  # the old behaviour
    podman.apply(podman.plan_enable(only_xdg, env))
    found = cleanup_netavark(env)
    assert found is not None and not podman.is_burrow(found)  # Podman's own netavark

    info = podman.collect_status(scope, env)
    assert info["podman_uses_burrow"] and not info["cleanup"]["uses_burrow"]
    warning = podman.cleanup_mismatch(info)
    assert warning is not None and "burrow podman enable --user" in warning
    text = podman.render_status(info)
    assert warning in text and f"{scope.cleanup_dropin} (absent)" in text

    change = podman.plan_enable(scope, env)
    assert not change.empty  # not "already enabled"
    podman.apply(change)
    info = podman.collect_status(scope, env)
    assert info["cleanup"]["uses_burrow"] and podman.cleanup_mismatch(info) is None


def test_a_foreign_file_in_the_cleanup_place_is_left_alone(tmp_path: Path) -> None:
    env = xdg_env(tmp_path)
    scope = user_scope(env)
    assert scope.cleanup_dropin is not None
    scope.cleanup_dropin.parent.mkdir(parents=True)
    scope.cleanup_dropin.write_text("[engine]\n")
    try:
        podman.plan_enable(scope, env)
    except podman.BurrowError as exc:
        assert str(scope.cleanup_dropin) in str(exc)
    else:
        raise AssertionError("enable overwrote a drop-in burrow did not write")
    change = podman.plan_disable(scope)
    assert any("not written by burrow" in ln for ln in change.lines())
    podman.apply(change)
    assert scope.cleanup_dropin.read_text() == "[engine]\n"
    assert os.listdir(scope.cleanup_dropin.parent) == [podman.DROPIN_NAME]
