"""Published ports keep the client's address (issue 13 item 2): the server in the sandbox sees
who really connected, TCP and UDP, IPv4 and IPv6.

A test-owned netns stands in for the host: burrow runs in it as the unprivileged test user,
and a client sits in a netns of its own, routed to it over a veth (TEST-NET addresses, nothing
of the machine's own network). Loopback clients show the sandbox's own address, as before;
`/tcp,no-client-addr` gives the old behaviour (the sandbox sees itself); a namespace where the
reply routing cannot be set up falls back, with a log line and a `burrow status` note.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_forwarder_hardening import FAMILY_SERVER, run_in
from tests.nsutil import Netns, unique
from tests.rootless_user import PATH, VENV_BIN, Session

pytestmark = pytest.mark.rootless

HOST4, CLIENT4 = "198.51.100.1", "198.51.100.7"
HOST6, CLIENT6 = "2001:db8:5::1", "2001:db8:5::7"
PORT = 18080  # inside a netns of our own: nothing else binds there
CLIENT = """
import socket,sys
addr,port,proto=sys.argv[1],int(sys.argv[2]),sys.argv[3]
fam=socket.AF_INET6 if ':' in addr else socket.AF_INET
s=socket.socket(fam,socket.SOCK_STREAM if proto=='t' else socket.SOCK_DGRAM); s.settimeout(10)
if proto=='t':
    s.connect((addr,port)); s.shutdown(socket.SHUT_WR); out=b''
    while (d:=s.recv(4096)): out+=d
else:
    s.sendto(b'x',(addr,port)); out=s.recv(4096)
print(out.decode())
"""


class HostSession(Session):
    """The test user's world, run inside a netns standing in for the host."""

    def __init__(self, inner: Session, host: Netns) -> None:
        super().__init__(inner.user, inner.runtime)
        self.host = host

    def argv(self, cmd: Any) -> list[str]:
        return ["nsenter", "-t", str(self.host.pid), "-n", "--", *super().argv(cmd)]


@contextmanager
def host_and_client(rootless_user: Any, tag: str, nets: list[tuple[str, str, int]],
                    routed: bool) -> Iterator[tuple[HostSession, Netns]]:
    """The test user's world in a "host" netns, and a client netns on a veth to it.

    `nets`: (host address, client address, prefix length) per family; `routed`: the client's
    default routes go via the host's addresses. Fails if `burrow down` leaves processes.
    """
    host, client = Netns(), Netns()
    session = HostSession(rootless_user.session(), host)
    try:
        a, b = unique(tag), unique(tag)
        host.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b, "netns",
                  str(client.pid)])
        for host_ip, client_ip, plen in nets:
            nodad = ["nodad"] if ":" in host_ip else []
            host.run(["ip", "addr", "add", f"{host_ip}/{plen}", "dev", a, *nodad])
            client.run(["ip", "addr", "add", f"{client_ip}/{plen}", "dev", b, *nodad])
        for ns, dev in ((host, a), (client, b)):
            ns.run(["ip", "link", "set", dev, "up"])
        for host_ip, _, _ in nets if routed else ():
            client.run(["ip", "-6" if ":" in host_ip else "-4", "route", "add", "default",
                        "via", host_ip])
        yield session, client
    finally:
        left = session.close()
        client.close()
        host.close()
    assert not left, f"processes left after `burrow down`: {left}"


@pytest.fixture
def world(rootless_user: Any) -> Iterator[tuple[HostSession, Netns]]:
    with host_and_client(rootless_user, "bsrc", [(HOST4, CLIENT4, 24), (HOST6, CLIENT6, 64)],
                         routed=True) as w:
        yield w


def ask(client: Netns, addr: str, port: int, proto: str) -> str:
    res = client.run(["/usr/bin/python3", "-c", CLIENT, addr, str(port), proto], timeout=30)
    return res.stdout.strip()


def addresses(rl: Any, name: str) -> tuple[str, str, dict[str, Any]]:
    rec = json.loads(rl.burrow("sandbox", "inspect", name, check=True).out)
    ips = [ip for att in rec["networks"].values() for ip in att["static_ips"]]
    return next(i for i in ips if ":" not in i), next((i for i in ips if ":" in i), ""), rec


def forwarder(rl: Any) -> dict[str, Any]:
    st = json.loads(rl.burrow("status", "--format", "json").out)
    return dict(st["forwarder"]), st


def test_server_sees_the_client_address_tcp_udp_v4_v6(world: tuple[HostSession, Netns]) -> None:
    rl, client = world
    rl.burrow("sandbox", "create", "web", "-p", f"{PORT}:80", "-p", f"{PORT}:90/udp",
              "-p", f"{PORT + 1}:81", "-p", f"{PORT + 2}:82", check=True, timeout=60)
    run_in(rl, "web", FAMILY_SERVER, "td:80,ud:90,t6:81,t4:82")
    # A non-loopback client, each family and protocol: the server logs its real address.
    assert ask(client, HOST4, PORT, "t") == f"d:::ffff:{CLIENT4}"
    assert ask(client, HOST6, PORT, "t") == f"d:{CLIENT6}"
    assert ask(client, HOST4, PORT, "u") == f"d:::ffff:{CLIENT4}"
    assert ask(client, HOST6, PORT, "u") == f"d:{CLIENT6}"
    # TCP binds the client's address inside the sandbox: the sandbox routes what answers
    # the dial's mark back to it over its loopback (clientaddr INSIDE).
    rules = rl.burrow("exec", "web", "--", "ip", "rule", check=True).out
    assert "fwmark 0x62720001 lookup 25202" in rules, rules
    # A server of one family only: the dial in the client's family is refused at once (the
    # sandbox's RST carries the mark back too), and the other family answers.
    v4, v6, _ = addresses(rl, "web")
    assert ask(client, HOST4, PORT + 1, "t") == f"6:{v6}"
    assert ask(client, HOST6, PORT + 2, "t") == f"4:{v4}"
    # Loopback clients on the host, whose address means nothing in the sandbox: dialled
    # inside the sandbox as before, so it sees its own address, in the client's family.
    got = rl.run(["python3", "-c", CLIENT, "127.0.0.1", str(PORT), "t"], check=True).out
    assert got.strip() == f"d:::ffff:{v4}"
    got = rl.run(["python3", "-c", CLIENT, "::1", str(PORT), "u"], check=True).out
    assert got.strip() == f"d:{v6}"
    fwd, st = forwarder(rl)
    assert fwd["client_address"]["kept"] >= 4 and not fwd["client_address"]["unavailable"]
    assert not fwd["client_address"]["inside_unavailable"]
    assert not any("client address" in n for n in st.get("notes", []))


def test_off_switch_gives_the_old_behaviour(world: tuple[HostSession, Netns]) -> None:
    rl, client = world
    rl.burrow("sandbox", "create", "old", "-p", f"{PORT}:80/tcp,no-client-addr", "-p",
              f"{PORT}:90/udp,no-client-addr", check=True, timeout=60)
    run_in(rl, "old", FAMILY_SERVER, "td:80,ud:90")
    v4, v6, rec = addresses(rl, "old")
    assert all(p.get("keep_client_address") is False for p in rec["ports"])
    # The dial is made inside the sandbox: its server sees the sandbox's own address.
    assert ask(client, HOST4, PORT, "t") == f"d:::ffff:{v4}"
    assert ask(client, HOST6, PORT, "t") == f"d:{v6}"
    assert ask(client, HOST4, PORT, "u") == f"d:::ffff:{v4}"
    ls = rl.burrow("port", "ls", check=True).out
    assert "no-client-addr" in ls, ls


def shim(rl: Any, name: str, script: str) -> Path:
    """A directory with an executable `name` (the user's own runtime dir: pytest's tmp is
    root's), to put first in the forwarder's PATH."""
    d = Path(rl.runtime) / "shim"
    d.mkdir(exist_ok=True)
    (d / name).write_text(script)
    (d / name).chmod(0o755)
    d.chmod(0o755)
    return d


def test_no_reply_routing_falls_back_with_a_note(world: tuple[HostSession, Netns]) -> None:
    """Where the user netns's reply routing cannot be set up (here nft refuses, as a kernel
    without nf_tables conntrack would), UDP ports work the old way, and status says why; TCP
    needs no nftables (it keeps the address inside the sandbox)."""
    rl, client = world
    rl.burrow("sandbox", "create", "first", check=True, timeout=60)  # the world, no ports yet
    d = shim(rl, "nft", "#!/bin/sh\necho 'Error: Could not process rule: Operation not "
             "supported' >&2\nexit 1\n")
    # The forwarder starts with this command's PATH (its first published port).
    rl.run(["env", f"PATH={d}:{PATH}", str(VENV_BIN / "burrow"), "sandbox", "create", "fb",
            "-p", f"{PORT}:80", "-p", f"{PORT}:90/udp"], check=True, timeout=60)
    run_in(rl, "fb", FAMILY_SERVER, "td:80,ud:90")
    v4, v6, _ = addresses(rl, "fb")
    # UDP is dialled inside the sandbox, as before: it sees its own address.
    assert ask(client, HOST6, PORT, "u") == f"d:{v6}"
    assert ask(client, HOST4, PORT, "u") == f"d:::ffff:{v4}"
    assert ask(client, HOST4, PORT, "t") == f"d:::ffff:{CLIENT4}"
    assert ask(client, HOST6, PORT, "t") == f"d:{CLIENT6}"
    fwd, st = forwarder(rl)
    gone = fwd["client_address"]["unavailable"]
    assert {u["family"] for u in gone} == {4, 6}, fwd
    assert all("Operation not supported" in u["reason"] for u in gone), gone
    text = rl.burrow("status", check=True).out
    assert "note:       client addresses are not kept for UDP over IPv4/IPv6" in text, text
    assert "PROBLEM" not in text, text
    log = rl.run(["sh", "-c", 'cat "$XDG_RUNTIME_DIR/burrow/log/forwarder.log"']).out
    assert log.count("client addresses cannot be kept for IPv4") == 1, log


def test_no_routing_inside_the_sandbox_dials_from_the_user_netns(
        world: tuple[HostSession, Netns]) -> None:
    """Where the sandbox's own reply routing cannot be set up (here `ip rule` refuses the
    dial mark's rule), TCP still keeps the client's address, dialled from the user's netns
    across the bridge; the forwarder says so, and status has no note (nothing is lost)."""
    rl, client = world
    rl.burrow("sandbox", "create", "first", check=True, timeout=60)
    real_ip = shutil.which("ip", path=PATH)
    d = shim(rl, "ip", f"#!/bin/sh\ncase \"$*\" in *0x62720001*) echo 'RTNETLINK answers: "
             f"Operation not permitted' >&2; exit 2;; esac\nexec {real_ip} \"$@\"\n")
    rl.run(["env", f"PATH={d}:{PATH}", str(VENV_BIN / "burrow"), "sandbox", "create", "fi",
            "-p", f"{PORT}:80"], check=True, timeout=60)
    run_in(rl, "fi", FAMILY_SERVER, "td:80")
    assert ask(client, HOST4, PORT, "t") == f"d:::ffff:{CLIENT4}"
    assert ask(client, HOST6, PORT, "t") == f"d:{CLIENT6}"
    rules = rl.burrow("exec", "fi", "--", "ip", "rule", check=True).out
    assert "0x62720001" not in rules, rules
    fwd, st = forwarder(rl)
    gone = fwd["client_address"]["inside_unavailable"]
    assert {u["family"] for u in gone} == {4, 6}, fwd
    assert all("Operation not permitted" in u["reason"] for u in gone), gone
    assert not fwd["client_address"]["unavailable"]
    assert not any("client address" in n for n in st.get("notes", []))


def test_two_clients_same_port_each_seen(world: tuple[HostSession, Netns]) -> None:
    """UDP: each client flow gets its own transparent socket; two flows of one client from
    two source ports both come back to the right sender."""
    rl, client = world
    rl.burrow("sandbox", "create", "u2", "-p", f"{PORT}:90/udp", check=True, timeout=60)
    run_in(rl, "u2", FAMILY_SERVER, "ud:90")
    outs = {ask(client, HOST4, PORT, "u") for _ in range(3)}
    assert outs == {f"d:::ffff:{CLIENT4}"}


def test_internal_network_keeps_the_old_peer(world: tuple[HostSession, Netns]) -> None:
    """A sandbox only on an --internal network has no route back to a client's address: its
    ports dial the old way (the sandbox sees itself) instead of hanging."""
    rl, client = world
    rl.burrow("network", "create", "closed", "--subnet", "10.93.0.0/24", "--internal",
              check=True)
    rl.burrow("sandbox", "create", "in", "--network", "closed", "-p", f"{PORT}:80",
              check=True, timeout=60)
    run_in(rl, "in", FAMILY_SERVER, "t4:80")
    v4 = addresses(rl, "in")[0]
    assert ask(client, HOST4, PORT, "t") == f"4:{v4}"
