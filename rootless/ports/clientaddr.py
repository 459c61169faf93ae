"""Keep the client's address: the sandbox's server sees who really connected.

The dial is made on a socket with IP_TRANSPARENT (IPV6_TRANSPARENT) and SO_MARK DIAL_MARK,
bound to the client's address, in one of two places (both namespaces of the user's world,
where the user holds CAP_NET_ADMIN; never the host's):

INSIDE, TCP of burrow's own sandboxes: in the sandbox's own netns, to its own address, so the
connection runs over the sandbox's loopback as an ordinary dial does (no veth, no bridge, no
conntrack, no nftables: measured, keeping the address then costs next to nothing). The server
answers the client's address; in the sandbox (`set_up_inside`):
- `net.ipv4.tcp_fwmark_accept=1`: the accepted socket, its SYN-ACK included, carries the mark
  of the SYN, i.e. DIAL_MARK (a SYN from outside has no mark: nothing changes for it);
- `net.ipv4.fwmark_reflect` / `net.ipv6.fwmark_reflect=1`: so does the kernel's RST for a port
  nobody listens on (the dial must be refused at once to try the other family);
- `ip rule fwmark DIAL_MARK lookup TABLE`, TABLE holding `local default dev lo`: what carries
  the mark is delivered locally, to the transparent socket.
UDP replies carry no mark (an unconnected server socket answers with sendto), so UDP, and
burrow-rootlessport (which leaves a Podman container's netns alone), dial VIA:

VIA: from the user's own netns (`via`, the netns that routes to the sandbox's network). The
sandbox answers the client's address through its default route, i.e. back into `via`, where
the reply would be forwarded on to the connector. So, all inside `via`:
- the dial socket carries SO_MARK DIAL_MARK; an nftables `output` rule copies it into the
  connection's conntrack mark as REPLY_MARK (two marks: the dial's own packets must still be
  routed to the sandbox, not delivered locally);
- a `prerouting` rule gives every packet of such a connection REPLY_MARK;
- `ip rule fwmark REPLY_MARK lookup TABLE`, and TABLE holds `local default dev lo`: the reply
  is delivered locally, to the transparent socket.
A client whose address means nothing inside the sandbox (loopback, link-local), or a dial that
crosses address families, is dialled inside the sandbox as before: the sandbox sees its own
address. Where the INSIDE set-up fails, TCP dials VIA; where the VIA set-up fails (no
nftables, no policy routing), the dialer says so once; the ports go on as before, with one
log line and a `burrow status` note.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("rootless.ports")

SO_MARK = 36
IP_TRANSPARENT = 19
IPV6_TRANSPARENT = 75
IP_BIND_ADDRESS_NO_PORT = 24  # bind(ip, 0) leaves the port to connect (the 4-tuple decides)
DIAL_MARK = 0x62720001  # "br": on the dial sockets
REPLY_MARK = 0x62720002  # on the connection's packets coming back
TABLE = 0x6272  # the routing table that delivers them locally
RULE_PRIORITY = 90  # before the main table (32766)
PLAIN, VIA, INSIDE = "", "via", "inside"  # how a dial socket is made (Plan.mode)
# Written in the sandbox's netns by set_up_inside (the opener's netns is the one they set).
INSIDE_SYSCTLS = {4: ("ipv4/tcp_fwmark_accept", "ipv4/fwmark_reflect"),
                  6: ("ipv4/tcp_fwmark_accept", "ipv6/fwmark_reflect")}
NFT_TABLE = "burrow_client_addr"
NFT_RULES = f"""add table inet {NFT_TABLE}
delete table inet {NFT_TABLE}
table inet {NFT_TABLE} {{
  chain dial {{
    type route hook output priority mangle; policy accept;
    meta mark {DIAL_MARK:#x} ct mark set {REPLY_MARK:#x}
  }}
  chain reply {{
    type filter hook prerouting priority mangle; policy accept;
    ct mark {REPLY_MARK:#x} meta mark set {REPLY_MARK:#x}
  }}
}}
"""


class Unsupported(Exception):
    """This namespace cannot keep client addresses for a family; the message says why."""


def _run(argv: list[str], what: str, check: bool = True) -> None:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=10,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as e:
        raise Unsupported(f"{what}: {e}") from None
    if check and res.returncode != 0:
        raise Unsupported(f"{what}: {(res.stderr or res.stdout).strip() or res.returncode}")


def _marks_with_iptables(family: int) -> None:
    """The same two rules with iptables, where there is no nft."""
    tool = "iptables" if family == 4 else "ip6tables"
    if shutil.which(tool) is None:
        raise Unsupported("neither nft nor iptables is installed")
    for rule in (["OUTPUT", "-m", "mark", "--mark", f"{DIAL_MARK:#x}", "-j", "CONNMARK",
                  "--set-mark", f"{REPLY_MARK:#x}"],
                 ["PREROUTING", "-m", "connmark", "--mark", f"{REPLY_MARK:#x}", "-j", "MARK",
                  "--set-mark", f"{REPLY_MARK:#x}"]):
        res = subprocess.run([tool, "-w", "-t", "mangle", "-C", *rule], capture_output=True,
                             timeout=10, stdin=subprocess.DEVNULL, check=False)
        if res.returncode != 0:
            _run([tool, "-w", "-t", "mangle", "-A", *rule], f"{tool} mangle rule")


def set_up(family: int, marks_done: bool) -> None:
    """Make the current netns route replies of transparent dials of `family` back to them.

    Idempotent (a restarted forwarder sets it up again). Raises Unsupported."""
    if not marks_done:
        if shutil.which("nft"):
            _nft()
        else:
            _marks_with_iptables(family)
    _route_mark(family, REPLY_MARK)


def set_up_inside(family: int) -> None:
    """Make the current netns (a sandbox's) deliver what answers a DIAL_MARK socket locally.

    Idempotent. Raises Unsupported."""
    for name in INSIDE_SYSCTLS[family]:
        try:
            with open(f"/proc/sys/net/{name}", "w") as f:
                f.write("1")
        except OSError as e:
            raise Unsupported(f"net.{name.replace('/', '.')}: {e.strerror}") from None
    _route_mark(family, DIAL_MARK)


def _route_mark(family: int, mark: int) -> None:
    """`ip rule fwmark MARK lookup TABLE`, TABLE delivering everything locally."""
    ip = ["ip", "-4" if family == 4 else "-6"]
    any_ = "0.0.0.0/0" if family == 4 else "::/0"
    rule = ["rule", "add", "fwmark", f"{mark:#x}", "lookup", str(TABLE),
            "priority", str(RULE_PRIORITY)]
    _run([*ip, "rule", "del", *rule[2:]], "ip rule del", check=False)
    _run([*ip, *rule], f"ip -{family} rule add (policy routing)")
    _run([*ip, "route", "replace", "local", any_, "dev", "lo", "table", str(TABLE)],
         f"ip -{family} route replace local {any_} dev lo table {TABLE}")


def _nft() -> None:
    try:
        res = subprocess.run(["nft", "-f", "-"], input=NFT_RULES, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as e:
        raise Unsupported(f"nft: {e}") from None
    if res.returncode != 0:
        raise Unsupported(f"nft: {res.stderr.strip() or res.returncode}")


def make_transparent(s: socket.socket, family: int) -> None:
    """The options only CAP_NET_ADMIN in the netns's user namespace may set (the dialer's)."""
    try:
        if family == 4:
            s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
        else:
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
        s.setsockopt(socket.SOL_SOCKET, SO_MARK, DIAL_MARK)
    except OSError as e:
        raise Unsupported(f"IP_TRANSPARENT/SO_MARK: {e.strerror}") from None


def client_ip(host: str) -> tuple[str, int] | None:
    """The client's address and family as the sandbox should see it, or None when it means
    nothing there (loopback, link-local, unspecified): then the dial is made as before."""
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    if "." in host and ":" not in host:
        return None if host.startswith(("127.", "0.", "169.254.")) else (host, 4)
    if host in ("::1", "::") or "%" in host or host[:4].lower() in ("fe80", "fe9", "fea",
                                                                      "feb"):
        return None
    return host, 6


@dataclass(frozen=True, slots=True)
class Plan:
    """One way to dial: a socket of `family` made in `netns`, connected to `ip`; `mode` VIA
    or INSIDE: a transparent socket, bound to `bind` (the client's address) first, and
    `fallback` the way to dial instead when no such socket can be had or bound."""

    netns: str
    family: int
    mode: str
    ip: str
    bind: tuple[str, int] | None = None
    fallback: Plan | None = None
    # Derived once here (plans are cached per target and client), not per connection: the
    # TCP pool key, the key of a socket still bound to the client's address from before
    # (None unless bound to the address only), and the key a clean connection's socket goes
    # back under (rootless.ports.recycle), None for one that is closed instead.
    tcp_key: tuple[str, int, str, str] = field(init=False, repr=False, compare=False)
    bound_key: tuple[str, int, str, str, str] | None = field(init=False, repr=False,
                                                             compare=False)
    back_key: tuple[str, int, str, str] | tuple[str, int, str, str, str] | None = field(
        init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = (self.netns, self.family, "tcp", self.mode)
        bound = (*key, self.bind[0]) if self.bind is not None and not self.bind[1] else None
        object.__setattr__(self, "tcp_key", key)
        object.__setattr__(self, "bound_key", bound)
        object.__setattr__(self, "back_key", key if self.mode == PLAIN else bound)


class Availability:
    """Where client addresses could not be kept, by (via netns, family): the fallbacks."""

    def __init__(self) -> None:
        self.failed: dict[tuple[str, int], str] = {}
        # INSIDE set-ups that failed, by (sandbox netns, family): those dial VIA instead.
        self.inside_failed: dict[tuple[str, int], str] = {}
        self.kept = 0  # dials bound to a client's address
        self.reused = 0  # of them, on a socket still bound to it from before (recycle)
        self.version = 0  # bumped whenever what `usable` or `inside` answer may change

    def usable(self, via: str | None, family: int) -> bool:
        return via is not None and (via, family) not in self.failed

    def inside(self, netns: str, family: int) -> bool:
        return (netns, family) not in self.inside_failed

    def fail(self, netns: str, family: int, reason: str, mode: str = VIA) -> None:
        self.version += 1
        if mode == INSIDE:
            if (netns, family) not in self.inside_failed:
                self.inside_failed[(netns, family)] = reason
                log.warning("TCP client addresses for IPv%d cannot be kept inside %s (%s): "
                            "dialling from the user's netns instead", family, netns, reason)
            return
        via = netns
        if (via, family) not in self.failed:
            self.failed[(via, family)] = reason
            log.warning("client addresses cannot be kept for IPv%d (%s): published ports "
                        "show the sandbox its own address instead", family, reason)

    def bind(self, s: socket.socket, addr: tuple[str, int] | None) -> bool:
        """Bind a dial socket to the client's address (its port too where asked, unless that
        is taken or privileged); False if it cannot be bound."""
        if addr is None:
            return False
        try:
            s.bind(addr)
        except OSError as e:
            if not addr[1]:
                log.debug("bind %s: %s", addr[0], e)
                return False
            try:
                s.bind((addr[0], 0))
            except OSError as e:
                log.debug("bind %s: %s", addr[0], e)
                return False
        self.kept += 1
        return True

    def forget(self, netns: str) -> None:
        """The sandbox is gone (a new one at the same path is set up afresh)."""
        self.version += 1
        for fam in (4, 6):
            self.inside_failed.pop((netns, fam), None)

    def to_json(self) -> dict[str, Any]:
        return {"kept": self.kept, "reused": self.reused,
                "unavailable": [{"netns": v, "family": f, "reason": r}
                                for (v, f), r in sorted(self.failed.items())],
                "inside_unavailable": [{"netns": v, "family": f, "reason": r}
                                       for (v, f), r in sorted(self.inside_failed.items())]}
