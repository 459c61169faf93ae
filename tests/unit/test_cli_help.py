"""Every `burrow` command's --help renders: help text is shown as written, never parsed as
markup (a `[/tcp|udp]` in an option's help once crashed `burrow sandbox create --help`)."""

from __future__ import annotations

from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from rootless.cli import app


def _paths(cmd: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix]
    if hasattr(cmd, "commands"):  # a group
        for name, sub in cmd.commands.items():
            out += _paths(sub, (*prefix, name))
    return out


COMMANDS = _paths(typer.main.get_command(app))


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) or "burrow" for p in COMMANDS])
def test_help_renders(path: tuple[str, ...]) -> None:
    res = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "100"})
    assert res.exit_code == 0, res.output
    assert "usage:" in res.output.lower() and "Error" not in res.output


def test_help_keeps_brackets() -> None:
    out = CliRunner().invoke(app, ["sandbox", "create", "--help"], env={"COLUMNS": "200"}).output
    assert "[/tcp|udp]" in out


@pytest.mark.parametrize("cmd", ["enable", "disable"])
def test_podman_enable_disable_name_their_default_scope_and_show_an_example(cmd: str) -> None:
    """Neither --system nor --user given: the help says which one applies, and how to use it."""
    out = CliRunner().invoke(app, ["podman", cmd, "--help"], env={"COLUMNS": "100"}).output
    assert "--system when run by root" in out and f"burrow podman {cmd} --user" in out, out
    assert "already" in out and "running" in out  # what happens to running containers
