"""slirp4netns, spawned and supervised with pexpect.

PID mode (`slirp4netns ... HOLDER tap0`): slirp4netns joins the holder's user+net namespaces
by itself. Readiness and errors come from its own output (a pty, so it is line-buffered) under
a timeout. `--exit-fd` gets a pidfd of the holder, so slirp4netns exits the moment the namespace
goes: it does not outlive it even if burrow is killed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
from contextlib import ExitStack
from typing import Any

import pexpect

from netns.errors import BurrowError
from rootless.connectors.base import CONNECTOR_MTU, ConnectorInfo, masquerade_script
from rootless.connectors.errors import explain
from rootless.procs import ProcRef
from rootless.userns import Holder

EXIT_FD = 10
IFNAME = "tap0"
READY = "Starting slirp"


def _detach(child: pexpect.spawn) -> None:
    """Close our end of the pty without pexpect killing the child (its default on close)."""
    try:
        child.ptyproc.fileobj.close()
    except OSError:
        pass
    child.ptyproc.closed = True
    child.closed = True


def _ipv6_fixups() -> str:
    # With all.forwarding=1 (needed for bridges) tap0 ignores router advertisements, and a tap
    # made after the namespace's first one (a repair) never solicits one, so SLAAC is not to be
    # relied on. Give tap0 the address SLAAC would (fd00::<EUI-64 of its MAC>/64, slirp's
    # prefix) statically, and the default route via slirp's gateway fd00::2.
    return f"""
echo 2 > /proc/sys/net/ipv6/conf/{IFNAME}/accept_ra
echo 1 > /proc/sys/net/ipv6/conf/default/accept_ra
# (/sys/class/net here shows the host's links, so the MAC comes from `ip`.)
set -- $(ip -br link show dev {IFNAME})
IFS=: ; set -- $3 ; unset IFS
a=$(printf %02x $((0x$1 ^ 2)))
ip -6 addr replace fd00::$a$2:$3ff:fe$4:$5$6/64 dev {IFNAME} nodad
ip -6 route replace default via fd00::2 dev {IFNAME} metric 100 2>/dev/null || \
  ip -6 route replace default via fd00::2 dev {IFNAME} onlink metric 100
"""


class Slirp4netns:
    name = "slirp4netns"

    def start(self, holder: Holder, *, host_loopback: bool, timeout: float = 10.0
              ) -> ConnectorInfo:
        exe = shutil.which("slirp4netns")
        if exe is None:
            raise BurrowError("start slirp4netns: not installed; `apt-get install slirp4netns` "
                              "or use `--connector pasta`")
        sock = holder.paths.slirp_socket
        if sock.exists():
            sock.unlink()  # a leftover from a dead instance: slirp would fail to bind
        args = ["--configure", f"--mtu={CONNECTOR_MTU}", "--enable-ipv6",
                f"--exit-fd={EXIT_FD}", f"--api-socket={sock}"]
        if not host_loopback:
            args.append("--disable-host-loopback")
        args += [str(holder.pid), IFNAME]
        hpid = holder.pid

        def preexec() -> None:
            # ptyprocess closed every fd above 2 just before this; Python ignores SIGPIPE and
            # ptyprocess does not restore it.
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            os.dup2(os.pidfd_open(hpid), EXIT_FD)

        child = pexpect.spawn(exe, args, encoding="utf-8", codec_errors="replace",
                              ignore_sighup=True, preexec_fn=preexec, timeout=timeout,
                              echo=False, env=holder.env())
        idx = child.expect([READY, pexpect.EOF, pexpect.TIMEOUT])
        if idx != 0:
            output = (child.before or "")
            child.close(force=True)
            if idx == 2:
                raise explain(self.name, output + f" (no `{READY}` within {timeout:.0f} s)")
            raise explain(self.name, output)
        ref = ProcRef.of(child.pid)
        _detach(child)
        if ref is None:
            raise BurrowError("start slirp4netns: exited right after start")
        info = ConnectorInfo(self.name, ref, IFNAME, "10.0.2.2", "fd00::2", host_loopback)
        with ExitStack() as undo:
            undo.callback(info.stop)
            holder.run(["sh", "-c", _ipv6_fixups() + masquerade_script(IFNAME)],
                       what="configure slirp4netns link")
            undo.pop_all()
        return info


def api(path: str, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """One request on slirp4netns' API socket: JSON, shutdown(WR), read the reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(json.dumps(request).encode() + b"\n")
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    reply = json.loads(data or b"{}")
    if not isinstance(reply, dict):
        raise BurrowError(f"slirp4netns API: unexpected reply {data!r}")
    if "error" in reply:
        raise BurrowError(f"slirp4netns API: {reply['error'].get('desc', reply['error'])}")
    return reply
