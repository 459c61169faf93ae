"""The forwarder's helper inside the user namespace: it makes sockets in sandbox netns.

Runs as `nsenter -U -m -p -t HOLDER python -m rootless.ports.dialer FD`, so it is in the
holder's PID namespace (it dies with it) and mount namespace (it can open the sandbox netns
files). For each request on the SOCK_SEQPACKET `FD` it setns()es into the named netns, creates
N unconnected sockets and passes them back with SCM_RIGHTS. The forwarder connects them itself:
a socket keeps the netns it was created in, so no data ever passes through this process.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import sys

CLONE_NEWNET = 0x40000000


def main(argv: list[str]) -> int:
    chan = socket.socket(fileno=int(argv[0]))
    libc = ctypes.CDLL(None, use_errno=True)
    netns: dict[str, int] = {}
    while True:
        try:
            msg = chan.recv(65536)
        except ConnectionResetError:
            return 0
        if not msg:
            return 0
        req = json.loads(msg)
        path = str(req.get("netns", ""))
        if req.get("op") == "forget":
            fd = netns.pop(path, None)
            if fd is not None:
                os.close(fd)
            continue
        fds: list[int] = []
        err = None
        try:
            if path not in netns:
                netns[path] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            if libc.setns(netns[path], CLONE_NEWNET) != 0:
                e = ctypes.get_errno()
                raise OSError(e, os.strerror(e))
            fam = socket.AF_INET6 if req["family"] == 6 else socket.AF_INET
            kind = socket.SOCK_DGRAM if req["type"] == "udp" else socket.SOCK_STREAM
            for _ in range(int(req["n"])):
                fds.append(socket.socket(fam, kind | socket.SOCK_NONBLOCK).detach())
        except OSError as e:
            err = f"{path}: {e.strerror or e}"
            fd = netns.pop(path, None)
            if fd is not None:
                os.close(fd)
        head = json.dumps({"id": req["id"], "error": err}).encode()
        try:
            chan.sendmsg([head], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                   b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds))]
                         if fds else [])
        finally:
            for fd in fds:
                os.close(fd)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
