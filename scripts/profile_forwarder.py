#!/usr/bin/env python3
"""Where a forwarded connection's time goes: burrow's forwarder next to pasta -t.

For sequential connections (connect, read a short greeting, close) to an echo server behind
each forwarder, it reports the rate, the forwarder process's CPU per connection split into
user (for burrow: the Python interpreter) and system (the kernel: TCP handshakes, splice,
shutdown), and, with --strace, the system calls per connection by name (strace -c). CPU per
connection is less sensitive to a loaded machine than the rate; the system call counts are
exact.

Run as root (it runs burrow as the test user from tests/rootless_user.py, as the benches do):
    .venv/bin/python scripts/profile_forwarder.py [--conns 2000] [--rounds 3] [--strace]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.rootless_user import VENV_BIN, RootlessUser, Session  # noqa: E402

ECHO = """
import socket,sys
s=socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.setsockopt(socket.IPPROTO_IPV6,socket.IPV6_V6ONLY,0); s.bind(('::',int(sys.argv[1])))
s.listen(512)
while True:
    c,_=s.accept(); c.sendall(b'hello\\n'); c.close()
"""


def cpu(pid: int) -> tuple[int, int]:
    """(user, system) clock ticks of a process."""
    with open(f"/proc/{pid}/stat") as f:
        v = f.read().rsplit(")", 1)[1].split()
    return int(v[11]), int(v[12])


def conns(port: int, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", port), 2) as c:
            while c.recv(64):
                pass
    return n / (time.perf_counter() - t)


def measure(name: str, port: int, pid: int, n: int) -> None:
    conns(port, 100)  # warm: pools filled, code paths hot
    c0 = cpu(pid)
    rate = conns(port, n)
    c1 = cpu(pid)
    us = [(b - a) / os.sysconf("SC_CLK_TCK") / n * 1e6 for a, b in zip(c0, c1, strict=True)]
    print(f"{name:18} {rate:7.0f} conn/s   CPU per connection: user {us[0]:6.1f} us, "
          f"system {us[1]:6.1f} us   (load {os.getloadavg()[0]:.1f})", flush=True)


def syscalls(name: str, port: int, pid: int, n: int = 500) -> None:
    out = tempfile.mktemp(prefix="bsrc-strace-")
    st = subprocess.Popen(["strace", "-c", "-f", "-o", out, "-p", str(pid)],
                          stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached
    conns(port, n)
    time.sleep(0.3)
    st.terminate()
    st.wait()
    rows = []
    for line in Path(out).read_text().splitlines():
        p = line.split()
        if len(p) >= 5 and p[0][0].isdigit() and p[-1] != "total":
            try:
                rows.append((int(p[3]) / n, p[-1]))
            except ValueError:
                continue
    os.unlink(out)
    rows.sort(reverse=True)
    print(f"{name:18} {sum(c for c, _ in rows):5.1f} syscalls per connection: "
          + ", ".join(f"{s} {c:.2f}" for c, s in rows if c >= 0.05), flush=True)


def pasta(s: Session, port: int) -> tuple[subprocess.Popen[str], int, Path]:
    d = Path(tempfile.mkdtemp(dir=s.runtime))
    os.chown(d, s.user.uid, s.user.gid)
    (d / "echo.py").write_text(ECHO)
    p = s.popen(["pasta", "--config-net", "-f", "-t", f"{port}:5301", "-u", "none", "-T", "none",
                 "-U", "none", "-P", str(d / "pid"), "--", "/usr/bin/python3",
                 str(d / "echo.py"), "5301"], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not (d / "pid").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1)
    return p, int((d / "pid").read_text()), d


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conns", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--strace", action="store_true", help="also count system calls")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: it runs burrow as the test user")
    s = RootlessUser.ensure().session()
    try:
        port = 20000 + os.getpid() % 20000
        s.burrow("sandbox", "create", "prof", "-p", f"127.0.0.1:{port}:5301", check=True,
                 timeout=60)
        s.popen([str(VENV_BIN / "burrow"), "exec", "prof", "--", "/usr/bin/python3", "-c",
                 ECHO, "5301"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2)
        fwd = json.loads(s.burrow("status", "--format", "json", check=True).out)["forwarder"]
        others = None
        if shutil.which("pasta"):
            others = pasta(s, port + 1)
        for _ in range(args.rounds):  # alternating, so both see the same load
            measure("burrow forwarder", port, fwd["pid"], args.conns)
            if others:
                measure("pasta -t", port + 1, others[1], args.conns)
        if args.strace:
            syscalls("burrow forwarder", port, fwd["pid"])
            if others:
                syscalls("pasta -t", port + 1, others[1])
        if others:
            others[0].terminate()
            subprocess.run(["kill", str(others[1])], check=False)
    finally:
        s.close()
    print("burrow dials into a sandbox behind the bridge; pasta into its own namespace.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
