"""`burrow podman enable` pins the firewall driver of the netavark it stands in for.

Netavark before 1.9 knows only iptables; burrow-netavark's default is nftables. With
containers running across an enable or a disable, each container is torn down by the other
tool, which with another driver leaves its rules behind (tests/e2e/test_podman_switch.py shows
it with real Podman). The pin is NETAVARK_FW in the drop-in's [engine] env, which Podman sets
for the helpers it runs. Real files in a temporary directory; the "Podman's own netavark" is a
script answering `--version` like netavark does.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from rootless import podman


def fake_podman(tmp: Path, version: str) -> Path:
    d = tmp / "podman-libexec"
    d.mkdir(parents=True, exist_ok=True)
    nv = d / "netavark"
    nv.write_text(f"#!/bin/sh\nprintf 'netavark {version}'\n")
    nv.chmod(0o755)
    return d


def setup(tmp: Path, version: str, user_env: list[str] | None = None
          ) -> tuple[podman.Scope, dict[str, str]]:
    """A user whose containers.conf makes Podman search only the fake directory."""
    libexec = fake_podman(tmp, version)
    conf = tmp / "cfg" / "containers"
    conf.mkdir(parents=True)
    text = f'[engine]\nhelper_binaries_dir = ["{libexec}"]\n'
    if user_env is not None:
        text += "env = [" + ", ".join(f'"{e}"' for e in user_env) + "]\n"
    (conf / "containers.conf").write_text(text)
    env = {"HOME": str(tmp), "XDG_CONFIG_HOME": str(tmp / "cfg"), "XDG_DATA_HOME": str(tmp / "data")}
    return podman.Scope("user", conf / "containers.conf.d", tmp / "helpers"), env


def engine(path: Path) -> dict[str, object]:
    section = tomllib.loads(path.read_text())["engine"]
    assert isinstance(section, dict)
    return section


def test_netavark_1_4_gets_iptables_and_the_users_env_is_kept(tmp_path: Path) -> None:
    s, env = setup(tmp_path, "1.4.0", user_env=["TZ=UTC"])
    change = podman.plan_enable(s, env)
    assert any("iptables firewall driver" in line and "netavark 1.4" in line
               for line in change.lines()), change.lines()
    podman.apply(change)
    # A later file's list replaces an earlier one in Podman: the user's TZ must be repeated.
    assert engine(s.dropin)["env"] == ["TZ=UTC", "NETAVARK_FW=iptables"]
    info = podman.collect_status(s, env)
    assert info["podman_uses_burrow"] and info["firewall_driver"] == "iptables"
    assert "firewall driver:  iptables" in podman.render_status(info)
    assert podman.plan_enable(s, env).empty  # idempotent: the pin is not re-announced
    podman.apply(podman.plan_disable(s))
    assert not s.dropin.exists()


def test_an_older_enable_without_the_pin_is_updated(tmp_path: Path) -> None:
    s, env = setup(tmp_path, "1.4.0")
    podman.apply(podman.plan_enable(s, env))
    s.dropin.write_text(podman.render_dropin(s.helper_dir, [str(tmp_path / "podman-libexec")]))
    change = podman.plan_enable(s, env)
    assert not change.empty and any(line.startswith("+env = ") for line in change.lines())


def test_no_pin_for_an_nftables_capable_netavark_or_the_users_own_choice(tmp_path: Path) -> None:
    s, env = setup(tmp_path / "a", "1.12.2")
    podman.apply(podman.plan_enable(s, env))
    assert "env" not in engine(s.dropin)
    assert podman.collect_status(s, env)["firewall_driver"].startswith("nftables")

    s, env = setup(tmp_path / "b", "1.4.0", user_env=["NETAVARK_FW=nftables"])
    podman.apply(podman.plan_enable(s, env))
    assert "env" not in engine(s.dropin)  # the user's file keeps deciding
    info = podman.collect_status(s, env)
    assert info["firewall_driver"] == "nftables" and info["firewall_driver_from"].endswith(
        "containers.conf")


def test_the_cleanups_dropin_gets_the_pin_too(tmp_path: Path) -> None:
    """A custom XDG_CONFIG_HOME: the drop-in is also written where conmon's `podman container
    cleanup` reads it (HOME's ~/.config), and that teardown must use the same driver."""
    s0, env = setup(tmp_path, "1.4.0")
    home_conf = tmp_path / ".config" / "containers"
    home_conf.mkdir(parents=True)
    (home_conf / "containers.conf").write_text(
        (s0.conf_dir.parent / "containers.conf").read_text())
    s = podman.resolve_scope(False, True, None, str(tmp_path / "helpers"), env, euid=1000)
    assert s.cleanup_dropin == home_conf / "containers.conf.d" / podman.DROPIN_NAME
    podman.apply(podman.plan_enable(s, env))
    assert engine(s.dropin)["env"] == ["NETAVARK_FW=iptables"]
    assert s.cleanup_dropin is not None and engine(s.cleanup_dropin)["env"] == ["NETAVARK_FW=iptables"]
