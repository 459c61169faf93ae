"""The forwarder's helper inside the user namespace: it makes sockets in sandbox netns.

Runs as `nsenter -U -m -p -t HOLDER python -m rootless.ports.dialer FD`, so it is in the
holder's PID namespace (it dies with it) and mount namespace (it can open the sandbox netns
files). For each request on the SOCK_SEQPACKET `FD` it enters the named netns (one setns,
netns.nsenter), creates N unconnected sockets and passes them back with SCM_RIGHTS. The
forwarder connects them itself: a socket keeps the netns it was created in, so no data ever
passes through this process. A request it cannot parse is logged and dropped: the forwarder
is its only peer, but a bug there must not kill it.

Between requests it waits in a netns of its own, never a sandbox's: a task entered in a
netns keeps it alive, so staying in the last one served kept a removed sandbox's namespace
(and whatever still listened in it) alive for as long as the forwarder ran. What it holds
of a sandbox is then only the netns file it opened, closed on the forwarder's `Forget`.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import sys

from netns import logs, nsenter, proctitle
from netns.errors import BurrowError
from rootless.ports import clientaddr, inhost, messages

log = logging.getLogger("rootless.ports")
TITLE = "burrow forwarder-dialer"  # its process title (rootless.sandbox spares it)


def _this_netns() -> int:
    return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)


class Dialer:
    def __init__(self, chan: socket.socket) -> None:
        self.chan = chan
        self.netns: dict[str, int] = {}  # open netns files, by path
        self.home = _this_netns()  # where it waits between requests (go_home)
        self.away = False  # entered in a sandbox's netns
        # Client-address routing, per netns and kind (INSIDE or VIA): families set up, or why
        # it failed.
        self.routed: dict[tuple[str, bool], dict[int, str | None]] = {}

    def forget(self, path: str) -> None:
        fd = self.netns.pop(path, None)
        if fd is not None:
            os.close(fd)
        self.routed.pop((path, False), None)
        self.routed.pop((path, True), None)

    def route_replies(self, req: messages.Dial) -> None:
        """Once per netns and family: the reply routing of clientaddr (we are in req.netns)."""
        done = self.routed.setdefault((req.netns, req.inside), {})
        if req.family not in done:
            try:
                if req.inside:
                    clientaddr.set_up_inside(req.family)
                else:
                    ok = any(err is None for err in done.values())  # the marks are in place
                    clientaddr.set_up(req.family, marks_done=ok)
                done[req.family] = None
                log.info("client addresses kept for IPv%d %s %s", req.family,
                         "inside" if req.inside else "via", req.netns)
            except clientaddr.Unsupported as e:
                done[req.family] = str(e)
        if done[req.family] is not None:
            raise clientaddr.Unsupported(done[req.family])

    def go_home(self) -> None:
        """Leave the sandbox's netns. Home is the netns this dialer started in where it may go
        back there; the forwarder's own is the host's, which belongs to a user namespace
        where we hold no capability, so there the first return makes a private empty netns
        (it dies with us) and that is home from then on."""
        if not self.away:
            return
        try:
            nsenter.setns(self.home)
        except PermissionError:
            try:
                nsenter.unshare_net()
            except OSError as e:  # no way out: the old behaviour, said once per request
                log.error("dialer: cannot leave the netns it dialled in: %s", e)
                return
            os.close(self.home)
            self.home = _this_netns()
        self.away = False

    def make(self, req: messages.Dial) -> list[int]:
        """N sockets inside req.netns, or OSError (the netns is gone, out of fds)."""
        if req.netns not in self.netns:
            self.netns[req.netns] = os.open(req.netns, os.O_RDONLY | os.O_CLOEXEC)
        nsenter.setns(self.netns[req.netns])
        self.away = True
        if req.transparent:
            self.route_replies(req)
        fam = socket.AF_INET6 if req.family == 6 else socket.AF_INET
        kind = socket.SOCK_DGRAM if req.kind == "udp" else socket.SOCK_STREAM
        fds: list[int] = []
        try:
            for _ in range(req.n):
                s = socket.socket(fam, kind | socket.SOCK_NONBLOCK)
                try:
                    if req.transparent:
                        clientaddr.make_transparent(s, req.family)
                    if kind == socket.SOCK_STREAM:  # here, once, not per connection there
                        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        if req.transparent:  # bound to a client's address, not its port
                            s.setsockopt(socket.SOL_IP, clientaddr.IP_BIND_ADDRESS_NO_PORT, 1)
                        inhost.unpaced(s)  # the hop to the server never leaves the host
                except (OSError, clientaddr.Unsupported):
                    s.close()
                    raise
                fds.append(s.detach())
        except clientaddr.Unsupported:
            for fd in fds:
                os.close(fd)
            raise
        except OSError:
            if not fds:
                raise
        return fds

    def serve(self, req: messages.Dial) -> None:
        fds: list[int] = []
        err, unsupported = None, False
        try:
            fds = self.make(req)
        except clientaddr.Unsupported as e:
            err, unsupported = str(e), True
        except OSError as e:
            err = f"{req.netns}: {e.strerror or e}"
            self.forget(req.netns)
        finally:
            self.go_home()
        head = json.dumps(messages.DialReply(req.id, err, unsupported).to_json()).encode()
        try:
            self.chan.sendmsg([head], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                        b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds))]
                              if fds else [])
        except OSError as e:
            if e.errno in (errno.EPIPE, errno.ECONNRESET):
                raise  # the forwarder is gone: so is our reason to run
            log.error("dialer: reply to request %d: %s", req.id, e)
        finally:
            for fd in fds:
                os.close(fd)

    def run(self) -> int:
        while True:
            try:
                data = self.chan.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return 0
            if not data:
                return 0
            try:
                req = messages.parse_dialer_request(data)
            except (ValueError, BurrowError) as e:
                log.error("dialer: bad request %r: %s", data[:80], e)
                continue
            try:
                if isinstance(req, messages.Forget):
                    self.forget(req.netns)
                else:
                    self.serve(req)
            except (ConnectionResetError, BrokenPipeError):
                return 0


def main(argv: list[str]) -> int:
    proctitle.set_title(TITLE)
    logs.configure("burrow-forwarder-dialer", stream=sys.stderr)
    return Dialer(socket.socket(fileno=int(argv[0]))).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
