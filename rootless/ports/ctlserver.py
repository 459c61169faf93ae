"""The forwarder's control socket: JSON lines in, one JSON line out per request.

Requests are parsed into typed messages (rootless.ports.messages) before anything acts on
them; a malformed, huge or half-sent one costs its sender an error reply or the connection,
never the forwarder. Replies are written without blocking: a client that does not read cannot
stall the loop. Connections are capped; a new one over the cap sheds the idlest.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import select
import socket
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from netns.errors import BurrowError
from netns.loop import Loop
from rootless.ports import messages
from rootless.ports.budget import CONTROL_CONNS, OUT_OF_FDS, Guard

log = logging.getLogger("rootless.ports")
MAX_OUT = 4 << 20  # unread replies held for one client


@dataclass(eq=False)
class CtlConn:
    sock: socket.socket
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)
    closing: bool = False  # close once the outbuf is written


class ControlServer:
    def __init__(self, loop: Loop, path: str, guard: Guard,
                 handle: Callable[[messages.Request], dict[str, Any]],
                 free_fd: Callable[[], bool]) -> None:
        self.loop, self.guard, self.handle, self.free_fd = loop, guard, handle, free_fd
        self.conns: OrderedDict[int, CtlConn] = OrderedDict()  # least recently active first
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK
                                  | socket.SOCK_CLOEXEC)
        if os.path.lexists(path):
            os.unlink(path)  # stale, from a forwarder that died
        self.sock.bind(path)
        os.chmod(path, 0o600)
        self.sock.listen(64)
        loop.add(self.sock.fileno(), self._on_accept)

    def _on_accept(self, ev: int) -> None:
        freed = 0
        while True:
            try:
                c, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno == errno.ECONNABORTED:
                    continue
                if e.errno not in OUT_OF_FDS:
                    return
                # The user's own command beats whatever holds an fd for no client: an idle
                # control connection, else a pooled socket. Only then refuse it.
                self.guard.shed.out_of_fds += 1
                if freed < 4 and self._free_one():
                    freed += 1
                    continue
                if self.guard.spare.refuse_one(self.sock):
                    continue
                return
            if len(self.conns) >= CONTROL_CONNS:
                self.guard.shed.control_shed += 1
                self._close(next(iter(self.conns.values())))
            c.setblocking(False)
            cc = CtlConn(c)
            self.conns[c.fileno()] = cc
            self.loop.add(c.fileno(), partial(self._on_io, cc))

    def _free_one(self) -> bool:
        if self.conns:
            self.guard.shed.control_shed += 1
            self._close(next(iter(self.conns.values())))
            return True
        return self.free_fd()

    def _on_io(self, cc: CtlConn, ev: int) -> None:
        if cc.sock.fileno() not in self.conns:
            return  # shed earlier in this round of events
        self.conns.move_to_end(cc.sock.fileno())
        if ev & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR) and not cc.closing:
            self._read(cc)
        if cc.outbuf:
            self._flush(cc)
        elif cc.closing:
            self._close(cc)

    def _read(self, cc: CtlConn) -> None:
        try:
            data = cc.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            cc.closing = True
            return
        cc.inbuf += data
        while (end := cc.inbuf.find(b"\n")) >= 0:
            line = bytes(cc.inbuf[:end])
            del cc.inbuf[:end + 1]
            self._reply(cc, self._serve(line))
        if len(cc.inbuf) > messages.MAX_LINE:
            self._reply(cc, {"error": f"request longer than {messages.MAX_LINE} bytes"})
            cc.inbuf.clear()
            cc.closing = True

    def _serve(self, line: bytes) -> dict[str, Any]:
        try:
            return self.handle(messages.request_from_line(line))
        except BurrowError as e:
            return {"error": str(e)}
        except Exception as e:  # noqa: BLE001 - a bug met by one request fails that request only
            log.exception("control request failed")
            return {"error": f"internal error: {type(e).__name__}: {e}"}

    def _reply(self, cc: CtlConn, reply: dict[str, Any]) -> None:
        cc.outbuf += json.dumps(reply).encode() + b"\n"
        if len(cc.outbuf) > MAX_OUT:
            self._close(cc)

    def _flush(self, cc: CtlConn) -> None:
        if cc.sock.fileno() < 0:
            return
        try:
            n = cc.sock.send(cc.outbuf)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            self._close(cc)
            return
        del cc.outbuf[:n]
        # Once the peer has shut its side, EPOLLIN would fire forever: wait for room only.
        want = (0 if cc.closing else select.EPOLLIN) | (select.EPOLLOUT if cc.outbuf else 0)
        self.loop.modify(cc.sock.fileno(), want)
        if not cc.outbuf and cc.closing:
            self._close(cc)

    def _close(self, cc: CtlConn) -> None:
        fd = cc.sock.fileno()
        if fd < 0:
            return
        self.conns.pop(fd, None)
        self.loop.remove(fd)
        cc.sock.close()

    def close(self) -> None:
        for cc in list(self.conns.values()):
            self._close(cc)
        self.loop.remove(self.sock.fileno())
        self.sock.close()
