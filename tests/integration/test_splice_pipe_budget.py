"""The forwarder's pipes when its user is over the per-user pipe budget (fs.pipe-user-pages-soft):
a pipe that cannot grow keeps the size it has and a bulk flow still moves, in order.

Run for real as an unprivileged uid of its own (the budget is per user, so no other test's or
program's pipes shrink), which first uses up its budget with 1 MiB pipes, as a user running
many other programs would.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.root
UID = 61719  # no account: a user_struct, and so a pipe budget, of its own

SCRIPT = textwrap.dedent("""\
    import fcntl, os, select, socket, threading
    from rootless.ports.splice import BIG_PIPE, F_GETPIPE_SZ, F_SETPIPE_SZ, BigPipes, pipe_pair, pump

    soft = int(open("/proc/sys/fs/pipe-user-pages-soft").read())
    hog = []
    while True:  # 1 MiB pipes until the kernel refuses one more: the budget is used up
        r, w = os.pipe()
        hog.append(w)
        try:
            fcntl.fcntl(w, F_SETPIPE_SZ, BIG_PIPE)
        except PermissionError:
            break
        assert len(hog) * BIG_PIPE // 4096 <= 2 * soft, "never refused"
    big = BigPipes()
    p, _ = pipe_pair()
    small = fcntl.fcntl(p.w, F_GETPIPE_SZ)
    big.grow(p)
    print("grow", small, fcntl.fcntl(p.w, F_GETPIPE_SZ), big.count)

    def pair():
        lst = socket.socket(); lst.bind(("127.0.0.1", 0)); lst.listen(1)
        peer = socket.create_connection(lst.getsockname()); mine, _ = lst.accept()
        mine.setblocking(False)
        return mine, peer

    src, client = pair()
    dst, server = pair()
    data = bytes(range(256)) * 4096
    def send():
        client.sendall(data); client.shutdown(socket.SHUT_WR)
    got = bytearray()
    def read():
        while (d := server.recv(1 << 20)):
            got.extend(d)
    ts = [threading.Thread(target=send), threading.Thread(target=read)]
    for t in ts:
        t.start()
    while not p.done:
        select.select([src], [dst] if p.pending else [], [], 1)
        pump(src, dst, p, big)
    for t in ts:
        t.join(10)
    print("flow", got == data, p.bulk, fcntl.fcntl(p.w, F_GETPIPE_SZ), big.count)
""")


def test_over_the_pipe_budget_a_pipe_stays_small_and_the_flow_still_moves() -> None:
    """Over the soft limit the kernel makes new pipes of 2 pages and refuses to grow them for
    an unprivileged user: grow() keeps the pipe (no error, not counted) and the pump moves
    1 MiB through it."""
    repo = Path(__file__).resolve().parents[2]
    res = subprocess.run(["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups",
                          sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=60, cwd=repo, env={"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr[-2000:]
    grow, flow = (line.split() for line in res.stdout.splitlines())
    assert grow[0] == "grow" and grow[1] == grow[2], "the pipe kept its size"
    assert int(grow[1]) < 65536, "over the budget, new pipes are small"
    assert grow[3] == "0", "a refused grow is not counted as a big pipe"
    assert flow == ["flow", "True", "True", grow[1], "0"], "1 MiB moved, in order, through it"
