"""The client's cheap argv peek must route exactly as the real parser understands argv."""

from __future__ import annotations

import pytest

from netns import client, netavark_cli
from netns.errors import UsageError

VALID = [
    ["version"],
    ["--config", "/run/containers/networks", "setup", "/run/netns/netns-1"],
    ["--config=/cfg", "--rootless=false", "--aardvark-binary=/usr/lib/podman/aardvark-dns",
     "setup", "/proc/1/ns/net"],
    ["-c", "/cfg", "-r", "true", "teardown", "/run/netns/x"],
    ["--firewall-driver", "iptables", "--config", "/a", "--config", "/b", "teardown", "/n"],
    ["-c", "rel/dir", "create"],
    ["--file", "in.json", "-c", "/cfg", "setup", "/n"],
    ["--config", "/cfg", "update", "podman", "--network-dns-servers", "1.1.1.1"],
    ["--config", "/cfg", "firewall-reload"],
    ["--log-level", "debug", "--plugin-directory", "/p", "version"],
    ["--config", "/cfg", "setup", "--weird-but-positional"],
]  # fmt: skip

INVALID = [
    [],
    ["--help"],
    ["-V"],
    ["--config"],
    ["--bogus", "setup", "/n"],
    ["--bogus=1", "version"],
    ["bogus"],
    ["setup"],
    ["setup", "/a", "/b"],
    ["setup", ""],
    ["-x"],
    ["-f=in.json", "setup", "/n"],  # only long options take `=`
]


@pytest.mark.parametrize("argv", VALID, ids=" ".join)
def test_peek_agrees_with_parser(argv: list[str]) -> None:
    args = netavark_cli.parse_args(argv)
    p = client.peek(argv)
    assert p.command == args.command
    assert p.config == args.config
    assert p.has_file == (args.file is not None)
    if args.command in ("setup", "teardown"):
        assert p.netns_index is not None and argv[p.netns_index] == args.netns_path
    else:
        assert p.netns_index is None
    assert p.needs_stdin == (args.command in ("setup", "teardown", "create") and not args.file)


@pytest.mark.parametrize("argv", INVALID, ids=lambda a: " ".join(a) or "<empty>")
def test_peek_on_usage_errors_never_routes_a_netns(argv: list[str]) -> None:
    with pytest.raises(UsageError):
        netavark_cli.parse_args(argv)
    p = client.peek(argv)
    # Whatever it guessed, no fd is sent: the full parser reports the error.
    assert p.netns_index is None


def test_value_options_match_the_cli() -> None:
    # If netavark_cli grows an option with a value, the peek must skip its value too.
    assert set(netavark_cli._VALUE_OPTS) == client.VALUE_OPTS


def test_command_sets_are_cli_commands() -> None:
    assert client.ENGINE_COMMANDS <= set(netavark_cli.COMMANDS)
    assert client.NETNS_COMMANDS <= client.ENGINE_COMMANDS
