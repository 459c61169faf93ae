"""How the engine runs a DNS binary that is not burrow-dns: netavark's argv and RUST_LOG (spec §5)."""

from __future__ import annotations

import shutil

import pytest

from netns.aardvark import launch_argv, rust_log

ARGV = ["/usr/lib/podman/aardvark-dns", "--config", "/c/aardvark-dns", "-p", "53", "run"]


def test_without_systemd_the_binary_runs_as_is() -> None:
    assert launch_argv(list(ARGV), rootless=True, systemd_booted=False) == ARGV


def test_with_systemd_booted_it_runs_in_a_scope(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/" + name)
    assert launch_argv(list(ARGV), rootless=False, systemd_booted=True) == [
        "systemd-run", "-q", "--scope", *ARGV]
    assert launch_argv(list(ARGV), rootless=True, systemd_booted=True) == [
        "systemd-run", "-q", "--scope", "--user", *ARGV]
    monkeypatch.setattr(shutil, "which", lambda name: None)  # booted, but no systemd-run
    assert launch_argv(list(ARGV), rootless=True, systemd_booted=True) == ARGV


@pytest.mark.parametrize(("rust_log_in", "out"), [
    (None, "ERROR"), ("", "ERROR"), ("info", "INFO"), ("netavark=debug", "DEBUG"),
    ("warn", "WARN"), ("trace", "TRACE"), ("bogus", "ERROR"),
])  # fmt: skip
def test_rust_log_is_the_callers_level_in_netavarks_spelling(rust_log_in: str | None, out: str) -> None:
    env = {} if rust_log_in is None else {"RUST_LOG": rust_log_in}
    assert rust_log(env) == out
