"""The CLI's Podman shapes and scriptable output, where the code is pure: parsing of
`--network`/`-p`/`--add-host`/..., resolv.conf and hosts as written, `--format`, filters,
multi-name commands, --version/-h/completion, colour. (The same, run against a real world as
the unprivileged user: tests/integration/test_rootless_cli_shape.py.)"""

from __future__ import annotations

import datetime
import io
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from netns.errors import BurrowError
from rootless import netconf, publish, until
from rootless.cli import app, core
from rootless.cli import output as out
from rootless.netconf import NetworkRequest, filter_networks, make_network, parse_filters
from rootless.ports.spec import NO_CLIENT_ADDR, PortSpec
from rootless.records import Attachment, HostEntry, SandboxRecord, rfc3339
from rootless.sandbox import Attach, Identity, hosts_file, parse_networks, resolv_conf
from tests.unit.test_cli_help import COMMANDS

VENV_BURROW = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "burrow"


# -- --network ----------------------------------------------------------------------------------
def test_network_option_takes_podmans_keys() -> None:
    a = Attach.parse("web:ip=fd90::20,ip=10.90.0.20,interface_name=web0,alias=api")
    assert a == Attach("web", ("fd90::20", "10.90.0.20"), None, ("api",), "web0")
    assert Attach.parse("web:ip6=fd90::21").ips == ("fd90::21",)  # burrow's older spelling
    with pytest.raises(BurrowError, match="one IPv6 address per network"):
        Attach.parse("web:ip=fd90::1,ip=fd90::2")
    with pytest.raises(BurrowError, match="interface_name"):
        Attach.parse("web:interface_name=../x")


def test_network_none_and_network_alias() -> None:
    assert parse_networks(["none"]) == [Attach("none")]
    assert parse_networks([]) == []  # the default network, chosen by create
    with pytest.raises(BurrowError, match="cannot be combined"):
        parse_networks(["none", "web"])
    with pytest.raises(BurrowError, match="needs a network"):
        parse_networks(["none"], ["svc"])
    # --network-alias goes to every network; with no --network, to the default one.
    nets = parse_networks(["a:alias=x", "b"], ["svc"])
    assert [n.aliases for n in nets] == [("x", "svc"), ("svc",)]
    assert parse_networks([], ["svc"]) == [Attach(netconf.DEFAULT_NETWORK, aliases=("svc",))]
    for name in netconf.RESERVED:
        with pytest.raises(BurrowError, match="conflicts with a network mode"):
            make_network(NetworkRequest(name), {}, None)


# -- hostname, hosts, resolv.conf -------------------------------------------------------------
def test_identity_options_are_checked() -> None:
    ident = Identity.parse("api-1.example", ["example.com", "."], ["ndots:2", "edns0"],
                           ["db:10.1.2.3", "v6:fd00::5"])
    assert ident.hosts == (HostEntry("db", "10.1.2.3"), HostEntry("v6", "fd00::5"))
    for kw in ({"hostname": "a b"}, {"dns_search": ["bad domain"]},
               {"dns_options": ["ndots 2\nnameserver 6.6.6.6"]}, {"add_hosts": ["db"]},
               {"add_hosts": ["db:not-an-ip"]}, {"add_hosts": ["a/b:1.2.3.4"]}):
        with pytest.raises(BurrowError, match="invalid --"):
            Identity.parse(**kw)  # type: ignore[arg-type]


def _rec(**kw: Any) -> SandboxRecord:
    base: dict[str, Any] = dict(
        name="api", id="ab" * 32,
        networks=(("web", Attachment("eth0", ("10.90.0.10", "fd90::10"), ("backend",))),),
        status={"web": {"dns_server_ips": ["10.90.0.1", "fd90::1"],
                        "dns_search_domains": ["dns.podman"]}})
    return SandboxRecord(**{**base, **kw})


def test_resolv_conf_and_hosts_as_podman_writes_them() -> None:
    rec = _rec(dns=("9.9.9.9",), dns_search=("example.com",), dns_options=("ndots:2",),
               hostname="apihost", hosts=(HostEntry("db", "10.1.2.3"),))
    assert resolv_conf(rec, ["10.0.2.3"]) == (
        "search dns.podman example.com\nnameserver 10.90.0.1\nnameserver fd90::1\n"
        "nameserver 9.9.9.9\noptions ndots:2\n")
    assert hosts_file(rec).splitlines()[2:] == [
        "10.1.2.3\tdb", "10.90.0.10\tapihost api backend", "fd90::10\tapihost api backend"]
    # `--dns-search .`: no search line at all; no network (none): the world's resolver.
    assert "search" not in resolv_conf(_rec(dns_search=(".",)), [])
    assert resolv_conf(_rec(networks=(), status={}), ["10.0.2.3"]) == "nameserver 10.0.2.3\n"


def test_record_created_is_rfc3339_also_for_old_records() -> None:
    rec = _rec(created="2026-01-02T03:04:05Z", hostname="h", dns_search=("x.org",),
               dns_options=("edns0",), hosts=(HostEntry("db", "fd00::5"),))
    data = json.loads(json.dumps(rec.to_json()))
    assert data["created"] == "2026-01-02T03:04:05Z" and data["add_hosts"] == ["db:fd00::5"]
    assert SandboxRecord.from_json(data) == rec
    old = SandboxRecord.from_json({**data, "created": 1767322800.5})  # epoch, as before
    assert old.created == "2026-01-02T03:00:00Z"


# -- -p -----------------------------------------------------------------------------------------
def test_publish_without_host_port_picks_a_free_one() -> None:
    taken = PortSpec.parse("40000:1")
    asked: list[tuple[str, int, str]] = []

    def probe(ip: str, port: int, proto: str) -> bool:
        asked.append((ip, port, proto))
        return port % 3 != 0  # on this pretend host, every third port is in use

    ports = publish.parse(["80", "127.0.0.1::53/udp", "[::1]::8000-8001"], taken, probe)
    assert [(p.host_ip, p.container_port, p.range, p.protocol) for p in ports] == [
        ("", 80, 1, "tcp"), ("127.0.0.1", 53, 1, "udp"), ("::1", 8000, 2, "tcp")]
    lo, hi = publish.EPHEMERAL
    assert all(lo <= p.host_port <= hi for p in ports)
    assert all((p.host_port + i) % 3 for p in ports for i in range(p.range))
    assert ("127.0.0.1", ports[1].host_port, "udp") in asked
    (off,) = publish.parse([f"81/tcp,{NO_CLIENT_ADDR}"], [], probe)
    assert (off.container_port, off.protocol, off.keep_client) == (81, "tcp", False)
    # Given host ports pass through untouched, and Podman's unequal ranges are refused.
    assert publish.parse(["8080:80"], [], probe) == PortSpec.parse("8080:80")
    with pytest.raises(BurrowError, match="different lengths: 3 vs 1"):
        publish.parse(["127.0.0.1:9000-9002:80"], [], probe)
    with pytest.raises(BurrowError, match="no free host port"):
        publish.parse(["80"], [], lambda *_: False)


def test_can_bind_sees_a_port_in_use() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert not publish.can_bind("127.0.0.1", port, "tcp")
        assert publish.can_bind("127.0.0.1", port, "udp")


# -- output -------------------------------------------------------------------------------------
def test_format_is_table_or_json_and_anything_else_is_named() -> None:
    assert out.check_format("json") == "json"
    with pytest.raises(BurrowError, match="use table or json"):
        out.check_format("yaml")
    with pytest.raises(BurrowError, match="Go template"):
        out.check_format("yaml", template=True)
    assert out.check_format("{{.Name}}", template=True)


def test_tables_say_yes_and_no() -> None:
    rows = [{"name": "a", "dns": True, "subnets": ["10.0.0.0/24", "fd00::/64"]},
            {"name": "b", "dns": False, "subnets": []}]
    assert out.table(rows, ["name", "dns", "subnets"]) == [
        "NAME  DNS  SUBNETS", "a     yes  10.0.0.0/24,fd00::/64", "b     no"]
    assert out.table(rows, ["name"], heading=False) == ["a", "b"]


def test_go_template_subset() -> None:
    net = {"name": "web", "dns_enabled": True, "subnets": [{"subnet": "10.0.0.0/24"}],
           "labels": {"team": "a"}}
    fields = {"Name": "name", "DNSEnabled": "dns_enabled", "Subnets": "subnets",
              "Labels": "labels"}
    assert out.go_template("{{.Name}}\\t{{ .DNSEnabled }} {{.Labels.team}}", net, fields) \
        == "web\ttrue a"
    assert json.loads(out.go_template("{{json .Subnets}}", net, fields)) == net["subnets"]
    assert json.loads(out.go_template("{{json .}}", net, fields)) == net
    with pytest.raises(BurrowError, match="no field .Nope"):
        out.go_template("{{.Nope}}", net, fields)
    with pytest.raises(BurrowError, match="not supported"):
        out.go_template("{{range .Subnets}}x{{end}}", net, fields)


def test_each_goes_on_and_names_every_failure(capsys: pytest.CaptureFixture[str]) -> None:
    done: list[str] = []

    def act(n: str) -> str:
        if n.startswith("bad"):
            raise BurrowError(f"{n} does not exist")
        done.append(n)
        return n

    with pytest.raises(BurrowError, match=r"sandbox rm failed for 2 of 4: bad1, bad2"):
        out.each(["bad1", "a", "bad2", "b"], act, "sandbox rm")
    assert done == ["a", "b"]
    cap = capsys.readouterr()
    assert cap.out == "a\nb\n" and "bad1 does not exist" in cap.err


def test_colour_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert out.bold("x", Tty()) == "\033[1mx\033[0m"
    assert out.bold("x", io.StringIO()) == "x"  # piped
    monkeypatch.setenv("NO_COLOR", "1")
    assert out.bold("x", Tty()) == "x"


def test_engine_demo_steps_are_plain_when_piped() -> None:
    code = "import scripts.engine_demo as d; d.step('hello')"
    res = subprocess.run([str(VENV_BURROW.parent / "python"), "-c", code], capture_output=True,
                         text=True, cwd=VENV_BURROW.parents[2], check=True)
    assert res.stdout == "\n==> hello\n"


# -- network ls --filter ------------------------------------------------------------------------
def test_network_filters_as_podman() -> None:
    nets = [{"name": "web", "id": "aa11", "driver": "bridge", "labels": {"team": "a"}},
            {"name": "db", "id": "bb22", "driver": "bridge", "labels": {"team": "b", "x": ""}},
            {"name": "lan", "id": "cc33", "driver": "macvlan"}]

    def names(*f: str, used: tuple[str, ...] = ()) -> list[str]:
        return [n["name"] for n in filter_networks(nets, parse_filters(f), lambda n: n in used)]

    assert names("name=^w") == ["web"] and names("name=e") == ["web"]
    assert names("name=web", "name=db") == ["web", "db"]          # same key: either
    assert names("driver=bridge", "label=team=b") == ["db"]       # different keys: all
    assert names("label=team") == ["web", "db"] and names("label=x") == ["db"]
    assert names("label!=team=a") == ["db", "lan"]
    assert names("id=^cc") == ["lan"]
    assert names("dangling=true", used=("web",)) == ["db", "lan"]
    assert names("dangling=false", used=("web",)) == ["web"]
    for bad in ("color=red", "name", "name=(", "dangling=maybe"):
        with pytest.raises(BurrowError, match="invalid --filter"):
            parse_filters([bad])


def test_until_takes_podmans_times() -> None:
    now = 1_800_000_000.0
    assert until.until("10m", now) == now - 600
    assert until.until("1h30m", now) == now - 5400
    assert until.until("1.5h", now) == now - 5400
    assert until.until("300ms", now) == pytest.approx(now - 0.3)
    assert until.until("1700000000", now) == 1_700_000_000
    assert until.until("1700000000.5", now) == 1_700_000_000.5
    assert until.until("2026-11-29T06:00:00Z", now) == 1_795_932_000
    assert until.until("2026-11-29T07:00:00+01:00", now) == 1_795_932_000
    local = datetime.datetime(2026, 11, 29).timestamp()  # no zone: local time, as Podman
    assert until.until("2026-11-29", now) == local
    for bad in ("", "10x", "h", "yesterday", "2026-13-01", "1" * 80, "-5m", "1e9"):
        with pytest.raises(BurrowError, match="invalid --filter until"):
            until.until(bad, now)
    assert until.created_before("2026-11-29T05:59:59Z", 1_795_932_000)
    assert not until.created_before("2026-11-29T06:00:00Z", 1_795_932_000)
    assert not until.created_before("", 1_795_932_000)  # unknown age: never pruned by age


def test_network_until_filter_and_prune_keys() -> None:
    nets = [{"name": "old", "created": "2020-01-01T00:00:00Z"},
            {"name": "new", "created": rfc3339(time.time())}, {"name": "undated"}]
    kept = filter_networks(nets, parse_filters(["until=24h"]), lambda n: False)
    assert [n["name"] for n in kept] == ["old"]
    assert parse_filters(["until=2h", "label=a"], netconf.PRUNE_FILTER_KEYS)["label"] == ["a"]
    for bad in ("name=x", "dangling=true", "driver=bridge"):
        with pytest.raises(BurrowError, match="KEY one of label, label!, until"):
            parse_filters([bad], netconf.PRUNE_FILTER_KEYS)


def test_network_labels_are_kept() -> None:
    net = make_network(NetworkRequest("web", labels=netconf.parse_labels(["team=a", "x"])),
                       {}, None)
    assert net["labels"] == {"team": "a", "x": ""}
    assert "labels" not in make_network(NetworkRequest("db"), {}, None)


# -- the app: --version, -h, metavars, --format, completion, --connector ----------------------
def _invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "120",
                                                    "BURROW_STATE_DIR": "/nonexistent/bcsh"})


def test_version_and_short_help() -> None:
    res = _invoke("--version")
    assert res.exit_code == 0 and res.output.startswith("burrow ")
    for path in COMMANDS:
        if path in (("netavark",),):
            continue  # the engine's own CLI: its arguments pass through untouched
        res = _invoke(*path, "-h")
        assert res.exit_code == 0 and "Usage:" in res.output, (path, res.output)


def test_help_shows_no_python_types() -> None:
    for path in COMMANDS:
        text = _invoke(*path, "--help").output
        for bad in ("<str>", "<list[str]>", "<bool>", "<int>", "{name}", "{names}"):
            assert bad not in text, (path, bad, text)
    assert "--network, --net NET[:OPTS]" in _invoke("sandbox", "create", "--help").output
    # --mac is kept as a hidden alias of Podman's --mac-address.
    connect = _invoke("network", "connect", "--help").output
    assert "--mac-address MAC" in connect and "--mac MAC" not in connect


@pytest.mark.parametrize("listing", [("status",), ("sandbox", "ls"), ("network", "ls"),
                                     ("port", "ls"), ("podman", "status")])
def test_every_listing_refuses_other_formats(listing: tuple[str, ...]) -> None:
    res = _invoke(*listing, "--format", "yaml")
    assert res.exit_code == 2, res.output
    assert "'yaml'" in res.output and "table" in res.output and "json" in res.output


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(shell: str) -> None:
    res = subprocess.run([str(VENV_BURROW), "--show-completion", shell], capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 0 and "_BURROW_COMPLETE" in res.stdout, res.stderr


def test_completion_completes_commands() -> None:
    env = {**os.environ, "_BURROW_COMPLETE": "complete_bash", "COMP_WORDS": "burrow netw",
           "COMP_CWORD": "1"}
    res = subprocess.run([str(VENV_BURROW)], env=env, capture_output=True, text=True, timeout=30)
    assert res.stdout.split() == ["network"], (res.stdout, res.stderr)


def test_connector_of_a_running_world_of_another_kind_is_an_error() -> None:
    class Conn:
        kind = "pasta"

    class Rt:
        connector = Conn()

    class World:
        mode = "rootless"

        def current(self) -> Rt:
            return Rt()

    core._check_connector(World(), "pasta")  # type: ignore[arg-type]  # the same kind: fine
    with pytest.raises(BurrowError, match=r"uses pasta, not slirp4netns.*burrow down"):
        core._check_connector(World(), "slirp4netns")  # type: ignore[arg-type]


def test_an_unknown_connector_is_refused_where_it_enters() -> None:
    """`--connector bogus` is a usage error naming the choices, before any world is looked
    at (it was once compared with a running namespace's and answered "uses slirp4netns, not
    bogus ... run `burrow --connector bogus up`")."""
    res = _invoke("--connector", "bogus", "status")
    assert res.exit_code == 2, res.output
    assert "'bogus'" in res.output and "slirp4netns or pasta" in res.output
    assert "running namespace" not in res.output


@pytest.mark.parametrize("flag", [["--connector", "pasta"], ["--allow-host-loopback"]])
def test_rootless_only_flags_run_by_root_are_an_error(flag: list[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Run by root, burrow is rootful and has no connector: `sudo burrow --connector pasta
    ...` says so and names the fix, instead of ignoring the flag."""
    from rootless import rootful

    monkeypatch.setattr(rootful, "is_initial_root", lambda: True)
    res = CliRunner().invoke(app, [*flag, "status"],
                             env={"COLUMNS": "120", "BURROW_STATE_DIR": "/nonexistent/bcsh"})
    assert isinstance(res.exception, BurrowError), res.output
    assert flag[0] in str(res.exception) and "your own user" in str(res.exception)


def test_help_teaches_the_first_commands() -> None:
    """`burrow --help` ends with the quick start's commands; exec and run name their
    arguments and exit codes."""
    top = _invoke("--help").output
    for cmd in ("burrow demo", "burrow sandbox create", "burrow exec", "burrow down"):
        assert cmd in top, top
    exec_help = _invoke("exec", "--help").output
    assert "after --" in exec_help and "exit code" in exec_help, exec_help
    assert " NAME CMD...\n" in exec_help and "CMD....." not in exec_help, exec_help
    assert "125" in _invoke("run", "--help").output


def test_command_modules_register_in_one_place() -> None:
    from rootless import cli

    names = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    assert {"up", "status", "down", "exec", "network", "sandbox", "port", "podman"} <= names
    assert cli.COMMAND_MODULES[:4] == ("world_cmds", "sandbox_cmds", "network_cmds", "port_cmds")


def test_client_address_note_names_what_is_lost() -> None:
    from rootless.status import _client_address_note

    via = [{"netns": "/run/x", "family": 4, "reason": "nft: no"}]
    assert _client_address_note({"client_address": {"unavailable": []}}) is None
    assert _client_address_note({"client_address": {"unavailable": via}}) == (
        "client addresses are not kept for UDP over IPv4 (nft: no): sandboxes see their own "
        "address as the peer of those published ports")  # TCP keeps them inside the sandbox
    both = {"unavailable": via, "inside_unavailable": [{"netns": "/s", "family": 4,
                                                        "reason": "ip: no"}]}
    assert "not kept for TCP and UDP over IPv4" in str(_client_address_note(
        {"client_address": both}))
    v6_inside = {"unavailable": via, "inside_unavailable": [{"family": 6, "reason": "r"}]}
    assert "not kept for UDP over IPv4" in str(_client_address_note(
        {"client_address": v6_inside}))


def test_status_of_a_new_user_says_what_starts_the_world() -> None:
    """Nothing made yet: `burrow status` ends with what to run, not only a column of dashes;
    once something runs (or died) it says nothing of the kind."""
    from rootless import status

    class Lines:
        def status_lines(self, info: dict[str, Any]) -> list[str]:
            return ["namespace:  not running"]

    fresh = {"mode": "rootless", "state_dir": "/x", "namespace": None, "sandboxes": [],
             "problems": []}
    out = status.render(Lines(), fresh)  # type: ignore[arg-type]
    assert "nothing runs;" in out and "burrow sandbox create NAME" in out and "burrow demo" in out
    running = {**fresh, "namespace": {"holder_pid": 1}, "sandboxes": ["a"]}
    assert "nothing runs;" not in status.render(Lines(), running)  # type: ignore[arg-type]
    died = {**fresh, "problems": ["connector died"]}
    assert "nothing runs;" not in status.render(Lines(), died)  # type: ignore[arg-type]
