"""burrow-dns's forwarding against an off-path attacker (RFC 5452), on a real daemon in a
throwaway namespace with an upstream server the test runs on 10.89.8.8:53.

The attacker here is stronger than an off-path one: it sends from the upstream's own address
and port and knows the id in flight (the test's upstream forges the replies itself). What
still protects the client is the question check; with a known port only, the pool's ports
that change every few queries; and from any other address or port, the connected sockets.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.message
import dns.rcode
import dns.rrset
import pytest

from tests.integration.test_dns_hostile import stats
from tests.integration.test_dns_support import alive, ns_socket, pid_of, start_dns
from tests.nsutil import Netns

pytestmark = pytest.mark.root

GW, CTR = "10.89.7.1", "10.89.7.10"
UP, OTHER = "10.89.8.8", "10.89.8.9"  # the upstream; another address of the same host
REAL, FORGED = "192.0.2.1", "6.6.6.6"
Reply = Callable[[bytes], list[bytes]]  # the upstream's datagrams for one query, in order


@pytest.fixture
def ns(netns_factory: Callable[[], Netns]) -> Netns:
    n = netns_factory()
    for ip in (f"{GW}/24", f"{CTR}/32", f"{UP}/32", f"{OTHER}/32"):
        n.run(["ip", "addr", "add", ip, "dev", "lo"])
    return n


def config(cfg: Path, servers: str = UP) -> None:
    cfg.mkdir()
    (cfg / "dnp").write_text(f"{GW} {servers}\n{'a' * 64} {CTR}  r0\n")


def daemon(ns: Netns, cfg: Path, servers: str = UP, **env: str) -> int:
    config(cfg, servers)
    full = {"BURROW_DNS_UPSTREAM_TIMEOUT": "3", **{f"BURROW_DNS_{k.upper()}": v
                                                   for k, v in env.items()}}
    res = start_dns(ns, cfg, full, check=False)
    assert res.returncode == 0, res.stderr
    return pid_of(cfg)


def real(wire: bytes) -> bytes:
    """The true answer: the question as asked, NOERROR, A REAL for an A query."""
    q = dns.message.from_wire(wire)
    r = dns.message.make_response(q)
    if q.question[0].rdtype == 1:
        r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", REAL))
    return r.to_wire()


def truthful(wire: bytes) -> list[bytes]:
    return [real(wire)]


def question_bytes(wire: bytes) -> bytes:
    i = 12
    while wire[i]:
        i += wire[i] + 1
    return wire[12 : i + 5]


def socket_inode(pid: int, port: int) -> int:
    """The inode of `pid`'s UDP socket from local `port` to UP:53 (/proc/PID/net/udp: its
    netns's table). Unlike the port, which the kernel may hand to a later socket once this
    one is closed, an inode names one socket for good."""
    up = f"{struct.unpack('=I', socket.inet_aton(UP))[0]:08X}:0035"
    for line in Path(f"/proc/{pid}/net/udp").read_text().splitlines()[1:]:
        f = line.split()
        if int(f[1].split(":")[1], 16) == port and f[2] == up:
            return int(f[9])
    raise AssertionError(f"no socket of {pid} from port {port} to {UP}:53")


class Upstream:
    """UDP on UP:53: records (source address, query) and sends what `reply` makes of it."""

    def __init__(self, ns: Netns, reply: Reply | None = truthful) -> None:
        self.reply = reply
        self.seen: list[tuple[tuple[str, int], bytes]] = []
        self.pid = 0  # once set: the daemon whose socket each query came from is recorded
        self.inodes: list[int] = []
        self.sock = ns_socket(ns, socket.AF_INET, socket.SOCK_DGRAM, (UP, 53))
        self.sock.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE: drop nothing
        self.sock.settimeout(0.1)
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                wire, addr = self.sock.recvfrom(65535)
            except OSError:
                continue
            self.seen.append((addr, wire))
            if self.pid:  # read before the reply: the query's socket is open while it waits
                self.inodes.append(socket_inode(self.pid, addr[1]))
            for out in self.reply(wire) if self.reply is not None else []:
                self.sock.sendto(out, addr)

    def ports(self) -> list[int]:
        return [addr[1] for addr, _ in self.seen]

    def close(self) -> None:
        self._stop = True
        self.thread.join()
        self.sock.close()


@pytest.fixture
def upstream(ns: Netns) -> Iterator[Callable[..., Upstream]]:
    made: list[Upstream] = []

    def make(reply: Reply | None = truthful) -> Upstream:
        made.append(Upstream(ns, reply))
        return made[-1]

    yield make
    for u in made:
        u.close()


def client(ns: Netns) -> socket.socket:
    s = ns_socket(ns, socket.AF_INET, socket.SOCK_DGRAM, (CTR, 0))
    s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE: a burst's answers all fit
    s.settimeout(10)
    return s


def ask(ns: Netns, name: str, rdtype: str = "A") -> dns.message.Message:
    with client(ns) as s:
        s.sendto(dns.message.make_query(name, rdtype).to_wire(), (GW, 53))
        return dns.message.from_wire(s.recv(65535))


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


# -- source ports ---------------------------------------------------------------------------------
def test_forwarded_queries_leave_from_many_source_ports(
    ns: Netns, tmp_path: Path, upstream: Callable[..., Upstream]
) -> None:
    up = upstream()
    pid = daemon(ns, tmp_path / "cfg")
    up.pid = pid
    n = 640
    with client(ns) as s:
        for i in range(n):  # one at a time: every one is answered before the next leaves
            s.sendto(dns.message.make_query(f"h{i}.example.test", "A").to_wire(), (GW, 53))
            assert dns.message.from_wire(s.recv(65535)).answer
    ports = up.ports()
    assert len(ports) == n == len(up.inodes)
    per_socket = {i: up.inodes.count(i) for i in set(up.inodes)}
    # Each socket is retired after 64 queries (Limits.udp_socket_queries), so 640 queries
    # need at least 10 of them; the old code sent every query from one port. Counted per
    # socket, not per port: the kernel may give a closed socket's port to a later one.
    assert max(per_socket.values()) <= 64, per_socket
    assert len(per_socket) >= 10, per_socket
    assert len(set(ports)) >= 8, ports
    assert alive(pid)


def test_an_idle_socket_is_retired_after_its_seconds(
    ns: Netns, tmp_path: Path, upstream: Callable[..., Upstream]
) -> None:
    up = upstream()
    # one socket per upstream, that may serve any number of queries but only for 0.3 s
    pid = daemon(ns, tmp_path / "cfg", udp_pool="1", udp_socket_queries="100000",
                 udp_socket_seconds="0.3")
    before = fds(pid)
    assert ask(ns, "one.example.test").answer
    assert ask(ns, "two.example.test").answer
    assert wait_for(lambda: fds(pid) == before)  # the idle, due socket was closed
    assert stats(tmp_path / "cfg", pid)["upstream_udp_sockets"] == 0
    assert ask(ns, "three.example.test").answer
    ports = up.ports()
    assert ports[0] == ports[1] != ports[2]


# -- the question check ---------------------------------------------------------------------------
def _with_answer(wire: bytes, ip: str, rcode: int = 0) -> bytes:
    q = dns.message.from_wire(wire)
    r = dns.message.make_response(q)
    r.set_rcode(rcode)
    r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", ip))
    return r.to_wire()


def _other_name(wire: bytes) -> bytes:
    evil = dns.message.make_query("evil.example.test", "A")
    evil.id = struct.unpack("!H", wire[:2])[0]
    return _with_answer(evil.to_wire(), FORGED)


def _other_class(wire: bytes) -> bytes:
    out = bytearray(_with_answer(wire, FORGED))
    end = 12 + len(question_bytes(wire))
    out[end - 2 : end] = b"\x00\x03"  # CH
    return bytes(out)


def _other_type(wire: bytes) -> bytes:
    """The query's type 65 (HTTPS, b'\\x00A') as 97 (b'\\x00a'): equal once lower-cased."""
    out = bytearray(_with_answer(wire, FORGED, dns.rcode.NXDOMAIN))
    end = 12 + len(question_bytes(wire))
    out[end - 4 : end - 2] = b"\x00\x61"
    return bytes(out)


def _no_question(wire: bytes) -> bytes:
    """No question, and an answer record whose first bytes are the question's."""
    head = wire[:2] + b"\x81\x80" + struct.pack("!4H", 0, 1, 0, 0)
    rdata = socket.inet_aton(FORGED)
    return head + question_bytes(wire) + struct.pack("!IH", 60, 4) + rdata


def _two_questions(wire: bytes) -> bytes:
    out = bytearray(_with_answer(wire, FORGED))
    qb = question_bytes(wire)
    out[4:6] = b"\x00\x02"
    return bytes(out[:12 + len(qb)]) + b"\x04evil\x00\x00\x01\x00\x01" + bytes(out[12 + len(qb):])


def _not_a_response(wire: bytes) -> bytes:
    out = bytearray(_with_answer(wire, FORGED))
    out[2] &= 0x7F  # QR clear
    return bytes(out)


FORGERIES: dict[str, tuple[Callable[[bytes], bytes], str, str]] = {
    # name: (forgery, query type, the drop it is counted as)
    "other_name": (_other_name, "A", "wrong_question"),
    "other_class": (_other_class, "A", "wrong_question"),
    "other_type": (_other_type, "HTTPS", "wrong_question"),
    "no_question": (_no_question, "A", "wrong_question"),
    "two_questions": (_two_questions, "A", "wrong_question"),
    "not_a_response": (_not_a_response, "A", "not_a_reply"),
}


def _check_real(reply: dns.message.Message, name: str, rdtype: str) -> None:
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.question[0].name == dns.name.from_text(name)
    assert reply.question[0].rdtype == dns.rdatatype.from_text(rdtype)
    got = sorted(rd.to_text() for rrset in reply.answer for rd in rrset)
    assert got == ([REAL] if rdtype == "A" else [])


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_a_forged_udp_reply_with_the_right_id_is_dropped_and_the_real_one_arrives(
    ns: Netns, tmp_path: Path, upstream: Callable[..., Upstream], forgery: str
) -> None:
    forge, rdtype, kind = FORGERIES[forgery]
    # From the upstream's own address and port, with the id in flight: forged, then real.
    upstream(lambda wire: [forge(wire), real(wire)])
    pid = daemon(ns, tmp_path / "cfg")
    name = "www.example.test."
    _check_real(ask(ns, name, rdtype), name, rdtype)
    assert stats(tmp_path / "cfg", pid)["upstream_dropped"][kind] == 1


def test_the_question_matches_whatever_its_case(
    ns: Netns, tmp_path: Path, upstream: Callable[..., Upstream]
) -> None:
    def lowered(wire: bytes) -> list[bytes]:
        out = real(wire)
        qb = question_bytes(wire)
        return [out[:12] + qb.lower() + out[12 + len(qb):]]

    upstream(lowered)
    daemon(ns, tmp_path / "cfg")
    reply = ask(ns, "MiXeD.Example.TEST.")
    assert [rd.to_text() for rrset in reply.answer for rd in rrset] == [REAL]


class TcpUpstream:
    """TCP on UP:53: per connection, one framed query, then `reply`'s frames in order."""

    def __init__(self, ns: Netns, reply: Reply) -> None:
        self.reply = reply
        self.sock = ns_socket(ns, socket.AF_INET, socket.SOCK_STREAM, (UP, 53))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                size = struct.unpack("!H", conn.recv(2))[0]
                wire = b""
                while len(wire) < size:
                    wire += conn.recv(size - len(wire))
                conn.sendall(b"".join(struct.pack("!H", len(m)) + m for m in self.reply(wire)))
                conn.recv(1)  # until the asker closes

    def close(self) -> None:
        self._stop = True
        self.thread.join()
        self.sock.close()


def _wrong_id(wire: bytes) -> bytes:
    out = bytearray(_with_answer(wire, FORGED))
    out[0] ^= 0x5A
    return bytes(out)


TCP_FORGERIES = {**FORGERIES, "wrong_id": (_wrong_id, "A", "unknown_id"),
                 "short": (lambda wire: b"\x00" * 11, "A", "not_a_reply")}


@pytest.mark.parametrize("forgery", sorted(TCP_FORGERIES))
def test_a_forged_tcp_frame_is_dropped_and_the_real_one_arrives(
    ns: Netns, tmp_path: Path, forgery: str
) -> None:
    forge, rdtype, kind = TCP_FORGERIES[forgery]
    up = TcpUpstream(ns, lambda wire: [forge(wire), real(wire)])
    try:
        pid = daemon(ns, tmp_path / "cfg")
        name = "tcp.example.test."
        s = ns_socket(ns, socket.AF_INET, socket.SOCK_STREAM, (CTR, 0))
        with s:
            s.settimeout(10)
            s.connect((GW, 53))
            reply = dns.query.tcp(dns.message.make_query(name, rdtype), GW, timeout=10, sock=s)
        _check_real(reply, name, rdtype)
        assert stats(tmp_path / "cfg", pid)["upstream_dropped"][kind] == 1
    finally:
        up.close()


# -- other addresses and ports --------------------------------------------------------------------
def test_a_reply_from_another_port_or_address_is_ignored(
    ns: Netns, tmp_path: Path, upstream: Callable[..., Upstream]
) -> None:
    held: list[tuple[tuple[str, int], bytes]] = []
    got_query = threading.Event()

    def hold(wire: bytes) -> list[bytes]:
        got_query.set()
        return []

    up = upstream(hold)
    daemon(ns, tmp_path / "cfg")
    name = "spoof.example.test."
    with client(ns) as c:
        c.sendto(dns.message.make_query(name, "A").to_wire(), (GW, 53))
        assert got_query.wait(5)
        held = list(up.seen)
        (src, wire), = held
        # Perfect forgeries (right id, right question) from everywhere but UP:53.
        for bind in ((UP, 5353), (OTHER, 53), (GW, 53 + 1)):
            s = ns_socket(ns, socket.AF_INET, socket.SOCK_DGRAM, bind)
            with s:
                s.sendto(_with_answer(wire, FORGED), src)
        up.sock.sendto(real(wire), src)  # after them, the real one
        _check_real(dns.message.from_wire(c.recv(65535)), name, "A")


# -- floods and fds -------------------------------------------------------------------------------
def test_garbage_flooded_at_the_pool_leaves_the_daemon_serving_and_no_fd_behind(
    ns: Netns, tmp_path: Path, upstream: Callable[..., Upstream]
) -> None:
    up = upstream(None)  # holds every query: the test answers them after the flood
    cfg = tmp_path / "cfg"
    pid = daemon(ns, cfg, udp_socket_seconds="1", upstream_timeout="20")
    baseline = fds(pid)
    names = [f"g{i}.example.test." for i in range(40)]
    with client(ns) as c:
        for name in names:
            c.sendto(dns.message.make_query(name, "A").to_wire(), (GW, 53))
        assert wait_for(lambda: len(up.seen) == len(names))
        held = list(up.seen)
        rnd = random.Random(7)
        sent = 0
        for _ in range(25):  # from the upstream's own address and port: past the kernel's filter
            for src, wire in held:
                junk = [
                    rnd.randbytes(rnd.randrange(0, 600)),
                    wire[:2] + rnd.randbytes(rnd.randrange(0, 40)),  # the right id, then junk
                    _other_name(wire),
                    _no_question(wire),
                ]
                for j in junk:
                    up.sock.sendto(j, src)
                sent += len(junk)
        for src, wire in held:
            up.sock.sendto(real(wire), src)
        answers = {}
        for _ in names:
            r = dns.message.from_wire(c.recv(65535))
            answers[r.question[0].name.to_text()] = [rd.to_text() for rs in r.answer for rd in rs]
    assert answers == dict.fromkeys(names, [REAL])
    assert alive(pid)
    counts = stats(cfg, pid)
    assert counts["faults"] == 0
    assert sum(counts["upstream_dropped"].values()) > 0
    assert wait_for(lambda: fds(pid) == baseline)  # the pool's sockets closed once idle


@pytest.mark.parametrize("cap", ["udp_sockets_total", "udp_pool_total"])
def test_a_burst_to_a_dead_upstream_holds_no_more_sockets_than_the_cap(
    ns: Netns, tmp_path: Path, upstream: Callable[..., Upstream], cap: str
) -> None:
    up = upstream(None)  # silent: every query stays in flight until its timeout
    cfg = tmp_path / "cfg"
    most, burst = 12, 600
    # 2 queries per socket would need 300 sockets for the burst; the cap allows 12
    pid = daemon(ns, cfg, udp_socket_queries="2", upstream_timeout="4", **{cap: str(most)})
    baseline = fds(pid)
    with client(ns) as c:
        for i in range(burst):
            c.sendto(dns.message.make_query(f"d{i}.example.test", "A").to_wire(), (GW, 53))
        assert wait_for(lambda: len(up.seen) == burst)  # none shed: all forwarded
        held = fds(pid)
        in_flight = stats(cfg, pid)
        codes = [dns.message.from_wire(c.recv(65535)).rcode() for _ in range(burst)]
    assert 1 < len(set(up.ports())) <= most
    assert held - baseline <= most
    assert in_flight["upstream_pending"] == burst and in_flight["upstream_udp_sockets"] <= most
    assert codes == [dns.rcode.SERVFAIL] * burst  # every one answered when its time was up
    assert wait_for(lambda: fds(pid) == baseline)


def test_a_silent_first_server_at_the_socket_cap_does_not_starve_the_next(
    ns: Netns, tmp_path: Path, upstream: Callable[..., Upstream]
) -> None:
    silent = ns_socket(ns, socket.AF_INET, socket.SOCK_DGRAM, (OTHER, 53))  # no ICMP either
    upstream()
    # The silent server's pool takes both sockets allowed; when its queries time out they
    # must still reach the second server, which then has to take one of those sockets.
    daemon(ns, tmp_path / "cfg", servers=f"{OTHER},{UP}", udp_sockets_total="2", udp_pool="2",
           udp_socket_queries="1000", upstream_timeout="2")
    names = [f"s{i}.example.test." for i in range(40)]
    with silent, client(ns) as c:
        for name in names:
            c.sendto(dns.message.make_query(name, "A").to_wire(), (GW, 53))
        answers = {}
        for _ in names:
            r = dns.message.from_wire(c.recv(65535))
            answers[r.question[0].name.to_text()] = [rd.to_text() for rs in r.answer for rd in rs]
    assert answers == dict.fromkeys(names, [REAL])


def test_a_query_whose_question_cannot_be_matched_is_not_forwarded(
    ns: Netns, tmp_path: Path, upstream: Callable[..., Upstream]
) -> None:
    # The name is a pointer into the header (offset 4 reads as the root name): dnslib parses
    # it, but no reply's question could be compared with it, so any reply with the id would
    # have done. It gets SERVFAIL and never leaves.
    up = upstream(lambda wire: [_other_name(wire)])
    daemon(ns, tmp_path / "cfg")
    wire = struct.pack("!6H", 0x7777, 0x0100, 1, 0, 0, 0) + b"\xc0\x04\x00\x01\x00\x01"
    with client(ns) as c:
        c.sendto(wire, (GW, 53))
        reply = c.recv(65535)
    assert reply[:2] == b"\x77\x77" and reply[3] & 0x0F == dns.rcode.SERVFAIL
    assert up.seen == []


def test_no_new_query_leaves_from_a_port_that_got_a_stray_reply(
    ns: Netns, tmp_path: Path, upstream: Callable[..., Upstream]
) -> None:
    up = upstream()
    cfg = tmp_path / "cfg"
    # one socket that could serve every query for minutes: only the stray may retire it
    pid = daemon(ns, cfg, udp_pool="1", udp_socket_queries="100000", udp_socket_seconds="600")
    assert ask(ns, "one.example.test").answer
    (src, wire), = up.seen
    up.sock.sendto(_with_answer(wire, FORGED), src)  # a guess at an id no longer in flight
    assert wait_for(lambda: stats(cfg, pid)["upstream_dropped"]["unknown_id"] == 1)
    assert ask(ns, "two.example.test").answer
    assert up.ports()[1] != up.ports()[0]


def test_a_tcp_upstream_sending_only_strays_is_failed_not_read_until_its_timeout(
    ns: Netns, tmp_path: Path
) -> None:
    strays = 50
    up = TcpUpstream(ns, lambda wire: [_wrong_id(wire)] * strays + [real(wire)])
    try:
        cfg = tmp_path / "cfg"
        pid = daemon(ns, cfg)
        s = ns_socket(ns, socket.AF_INET, socket.SOCK_STREAM, (CTR, 0))
        with s:
            s.settimeout(10)
            s.connect((GW, 53))
            reply = dns.query.tcp(dns.message.make_query("t.example.test", "A"), GW,
                                  timeout=10, sock=s)
        assert reply.rcode() == dns.rcode.SERVFAIL  # its only server broke the protocol
        assert stats(cfg, pid)["upstream_dropped"]["unknown_id"] == 9  # MAX_STRAY_FRAMES + 1
    finally:
        up.close()
