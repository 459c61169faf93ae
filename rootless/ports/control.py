"""Client side of the forwarder: start it on demand, then add/remove/list ports."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from typing import Any

from netns.errors import BurrowError
from rootless.paths import StatePaths, locked, read_json, write_json
from rootless.ports import messages
from rootless.procs import ProcRef
from rootless.userns import Holder

UDP_TIMEOUT_ENV = "BURROW_UDP_TIMEOUT"


def request(paths: StatePaths, req: messages.Request | dict[str, Any],
            timeout: float = 10.0) -> dict[str, Any]:
    """Send one request (a typed message, or its JSON form, parsed here first) and return the
    reply; a BurrowError if the forwarder is not running or answers with an error."""
    msg = messages.parse_request(req) if isinstance(req, dict) else req
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(paths.forwarder_socket))
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise BurrowError("the port forwarder is not running") from e
        s.sendall(json.dumps(msg.to_json()).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    reply = json.loads(buf or b"{}")
    if not isinstance(reply, dict):
        raise BurrowError("port forwarder: bad reply")
    if "error" in reply:
        raise BurrowError(str(reply["error"]))
    return reply


def running(paths: StatePaths) -> ProcRef | None:
    data = read_json(paths.forwarder)
    ref = ProcRef.from_json(data.get("proc") if data else None)
    return ref if ref is not None and ref.alive() else None


def ensure(holder: Holder) -> ProcRef:
    paths = holder.paths
    ref = running(paths)
    if ref is not None:
        return ref
    with locked(paths.forwarder_lock, what="the port forwarder"):
        ref = running(paths)
        if ref is not None:
            return ref
        log = open(paths.forwarder_log, "ab")
        args = [sys.executable, "-m", "rootless.ports.forwarder", str(paths.forwarder_socket),
                str(holder.pid), os.environ.get(UDP_TIMEOUT_ENV, "60")]
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=log, start_new_session=True, cwd="/", env=holder.env())
        log.close()
        assert proc.stdout is not None
        line = proc.stdout.readline()
        proc.stdout.close()
        if line.strip() != b"ready":
            proc.kill()
            tail = paths.forwarder_log.read_text(errors="replace")[-500:]
            raise BurrowError(f"start port forwarder: {tail.strip() or 'exited'}")
        new = ProcRef.of(proc.pid)
        if new is None:
            raise BurrowError("start port forwarder: exited right after start")
        write_json(paths.forwarder, {"proc": new.to_json()})
        return new


def stop(paths: StatePaths) -> None:
    ref = running(paths)
    if ref is not None:
        ref.stop(grace=1.0)
