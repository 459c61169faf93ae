#!/usr/bin/env python3
"""One TCP connection's path through burrow's forwarder, phase by phase, in one process.

The forwarder's TCP parts (netns.loop, rootless.ports.pool with the real dialer process,
rootless.ports.tcp) run in this process on the host's 127.0.0.1; the dialer makes the sockets
in a throwaway netns whose loopback runs an echo server (connect, "hello", close), the same
kernel path as a dial to a sandbox's own address. A client process makes sequential
connections (connect, read to EOF, close), as `bench_rootless.py`'s conn/s row does, and
times each one's phases from its side: connect returned, first byte, EOF.

Modes (each worker is a fresh process; several trees alternate in one run for an A/B):
- rate: connections/s, and the forwarder's user/system CPU per connection;
- phases: the forwarder's handlers timed (accept, first event of the dial, client's FIN),
  next to the client's own timeline;
- cprofile: Python function calls per connection, and where the time goes;
- strace: system calls per connection by name.
With --rr, each mode measures, instead of connections, round trips of a 64-byte message on one open connection to an
  echo server that answers every read at once (the `round trip` row of bench_rootless.py):
  the round trip, and the forwarder's CPU per round trip (--conns round trips; with --clients,
  that many connections side by side).

Run as root (it makes a netns), e.g.:
    .venv/bin/python scripts/profile_tcp_path.py --mode rate --conns 3000 --rounds 3 \
        --tree /work/main --tree .
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

ECHO = """
import socket,sys
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind(('127.0.0.1',int(sys.argv[1]))); s.listen(512)
print('up',flush=True)
while True:
    c,_=s.accept(); c.sendall(b'hello\\n'); c.close()
"""
ECHO_RR = """
import socket,sys,threading
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind(('127.0.0.1',int(sys.argv[1]))); s.listen(512)
print('up',flush=True)
def one(c):
    c.setsockopt(socket.IPPROTO_TCP,socket.TCP_NODELAY,1)
    while (d:=c.recv(65536)): c.sendall(d)
while True:
    threading.Thread(target=one,args=(s.accept()[0],),daemon=True).start()
"""
# Round trips of 64 bytes on one connection; one JSON line: the rate of round trips, and the
# median over batches of 500 of the mean round trip (microseconds).
CLIENT_RR = """
import json,socket,statistics,sys,time
port,n,pre=int(sys.argv[1]),int(sys.argv[2]),int(sys.argv[3])
msg=b'x'*64
for _ in range(pre):  # short connections first: the forwarder's pool then holds used sockets
    with socket.create_connection(('127.0.0.1',port),5) as c:
        c.sendall(b'x'); c.recv(1)
c=socket.create_connection(('127.0.0.1',port),5)
c.setsockopt(socket.IPPROTO_TCP,socket.TCP_NODELAY,1)
def rt(k):
    for _ in range(k):
        c.sendall(msg); got=0
        while got<64: got+=len(c.recv(64-got))
rt(500)
print('warm',flush=True); sys.stdin.readline()
pc=time.perf_counter_ns
means=[]; t0=pc(); left=n
while left>0:
    k=min(500,left); a=pc(); rt(k); means.append((pc()-a)/k/1e3); left-=k
t1=pc()
c.close()
print(json.dumps({'rate':n/((t1-t0)/1e9),'errors':{},'rtt':statistics.median(means),
                  'connect':0,'first_byte':0,'eof':0,'close':0}),flush=True)
"""
# Sequential connections; one JSON line: rate, and the medians of each phase (microseconds).
CLIENT = """
import json,socket,statistics,sys,time
port,n=int(sys.argv[1]),int(sys.argv[2])
for _ in range(200):  # warm: pools filled, code paths hot
    try:
        with socket.create_connection(('127.0.0.1',port),2) as c:
            while c.recv(64): pass
    except OSError: pass
print('warm',flush=True); sys.stdin.readline()
pc=time.perf_counter_ns
ph={'connect':[],'first_byte':[],'eof':[],'close':[]}
t0=pc()
errors={}
for _ in range(n):
    try:
        a=pc(); c=socket.socket(); c.connect(('127.0.0.1',port)); b=pc()
        c.recv(64); d=pc()
        while c.recv(64): pass
        e=pc(); c.close(); f=pc()
    except OSError as x:
        errors[repr(x)]=errors.get(repr(x),0)+1; c.close(); continue
    ph['connect'].append(b-a); ph['first_byte'].append(d-b); ph['eof'].append(e-d)
    ph['close'].append(f-e)
t1=pc()
print(json.dumps({'rate':n/((t1-t0)/1e9),'errors':errors,
                  **{k:statistics.median(v)/1e3 for k,v in ph.items()}}),flush=True)
"""


def cpu() -> tuple[float, float]:
    """This process's (user, system) seconds, to the microsecond (os.times counts ticks)."""
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def worker(args: argparse.Namespace) -> None:
    """The forwarder side, in this process, importing rootless from args.tree."""
    sys.path.insert(0, str(Path(args.tree).resolve()))
    import socket
    from ipaddress import IPv4Address

    from netns.loop import Loop
    from rootless.ports import tcp as tcpmod
    from rootless.ports.budget import Guard
    from rootless.ports.manager import bind
    from rootless.ports.pool import DialerPool
    from rootless.ports.spec import PortSpec
    from rootless.ports.target import Listener, Target
    from tests.nsutil import Netns

    with Netns() as ns:
        if args.inside_routing:  # as a burrow sandbox that keeps client addresses has it
            for cmd in (["sysctl", "-qw", "net.ipv4.tcp_fwmark_accept=1",
                         "net.ipv4.fwmark_reflect=1"],
                        ["ip", "rule", "add", "fwmark", "0x62720001", "lookup", "25202",
                         "priority", "90"],
                        ["ip", "route", "replace", "local", "0.0.0.0/0", "dev", "lo", "table",
                         "25202"]):
                ns.run(cmd)
        srv = ns.popen([sys.executable, "-c", ECHO_RR if args.rr else ECHO, "5301"],
                       stdout=subprocess.PIPE)
        assert srv.stdout is not None and srv.stdout.readline().strip() == "up"
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        dialer = start_dialer(args, child)
        loop = Loop()
        guard = Guard(65536, lambda: 0)
        pool = DialerPool(loop, parent, guard.shed, loop.stop)
        proxy = tcpmod.TcpProxy(loop, pool, guard)
        empty = [0]  # connections that found no pooled socket and waited for the dialer
        if hasattr(pool, "take"):
            take = pool.take

            def counted(key: Any) -> Any:
                s = take(key)
                empty[0] += s is None
                return s
            pool.take = counted  # type: ignore[method-assign]
        with socket.socket() as probe:  # a free port (a fixed one may be taken: EADDRINUSE)
            probe.bind(("127.0.0.1", 0))
            free = int(probe.getsockname()[1])
        spec = PortSpec.of("127.0.0.1", free, 5301)
        target = Target("prof", ns.path, IPv4Address("127.0.0.1"), None)
        lsock = bind(spec, spec.host_port)
        pool.open(ns.path)
        proxy.listen(Listener(lsock, spec, spec.host_port, 5301, target))
        timers = (instrument(loop, lsock.fileno(), spec.host_port) if args.mode == "phases"
                  else None)
        per = max(1, args.conns // args.clients)
        client = CLIENT_RR if args.rr else CLIENT
        cls = [subprocess.Popen([sys.executable, "-c", client, str(spec.host_port), str(per),
                                 str(args.pre)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
               for _ in range(args.clients)]
        out: list[str] = []

        def on_client(cl: subprocess.Popen[str], ev: int) -> None:
            assert cl.stdout is not None
            line = cl.stdout.readline()
            if not line:  # the client exited after its last line
                loop.remove(cl.stdout.fileno())
                return
            out.append(line)
            if len(out) == len(cls):
                loop.stop()

        for cl in cls:
            assert cl.stdout is not None
            loop.add(cl.stdout.fileno(), partial(on_client, cl))
        loop.run()  # the warm-up
        assert [x.strip() for x in out] == ["warm"] * len(cls)
        out.clear()
        if timers is not None:
            for v in timers.values():
                v.clear()
        prof = None
        if args.mode == "cprofile":
            import cProfile
            prof = cProfile.Profile()
        st = None
        if args.mode == "strace":
            stout = f"/tmp/cs-strace-{os.getpid()}"
            st = subprocess.Popen(["strace", "-c", "-o", stout, "-p", str(os.getpid())],
                                  stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        if args.mode == "perf":
            stout = f"/tmp/cs-perf-{os.getpid()}"
            st = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "20000",
                                   "-g", "-o", stout, "-p", str(os.getpid())],
                                  stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        c0 = cpu()
        for cl in cls:
            assert cl.stdin is not None
            cl.stdin.write("go\n")
            cl.stdin.flush()
        if prof is not None:
            prof.enable()
        loop.run()
        if prof is not None:
            prof.disable()
        c1 = cpu()
        if st is not None:
            st.send_signal(2 if args.mode == "perf" else 15)
            st.wait()
        got = [json.loads(x) for x in out]
        res = got[0]
        res["rate"] = sum(g["rate"] for g in got)  # the clients ran side by side
        total = per * len(cls)
        res["user_us"] = (c1[0] - c0[0]) / total * 1e6
        res["sys_us"] = (c1[1] - c0[1]) / total * 1e6
        res["tree"] = args.tree
        res["shed"] = {k: v for k, v in guard.shed.to_json().items() if v}
        if empty[0]:
            res["shed"]["waited_for_the_dialer"] = empty[0]
        res["errors"] = {k: sum(g["errors"].get(k, 0) for g in got)
                         for g0 in got for k in g0["errors"]}
        if timers is not None:
            import statistics
            res["handlers"] = {k: (len(v) / args.conns, statistics.median(v) / 1e3 if v else 0,
                                   sum(v) / 1e3 / args.conns) for k, v in timers.items()}
        if prof is not None:
            res["calls"] = report_profile(prof, args.conns, args.top)
        if args.mode == "strace":
            res["syscalls"] = report_strace(stout, args.conns)
        if args.mode == "perf":
            res["perf"] = stout
        print(json.dumps(res), flush=True)
        for cl in cls:
            cl.wait()
        srv.kill()
        dialer.stop()


class DialerProc:
    """The dialer as burrow's own forwarder runs it: a process of its own."""

    def __init__(self, args: argparse.Namespace, child: Any) -> None:
        self.p = subprocess.Popen([sys.executable, "-m", "rootless.ports.dialer",
                                   str(child.fileno())], pass_fds=[child.fileno()],
                                  cwd=args.tree, stderr=subprocess.DEVNULL,
                                  env={**os.environ, "PYTHONPATH": str(Path(args.tree).resolve())})
        child.close()

    def stop(self) -> None:
        self.p.kill()
        self.p.wait()


class DialerThread:
    """The dialer as burrow-rootlessport runs it: a thread of the forwarder's process
    (rootless.rootlessport.forward.start_dialer; --dialer thread)."""

    def __init__(self, args: argparse.Namespace, child: Any) -> None:
        import threading

        from rootless.ports.dialer import Dialer
        self.child = child
        self.t = threading.Thread(target=Dialer(child).run, daemon=True)
        self.t.start()

    def stop(self) -> None:
        import socket
        self.child.shutdown(socket.SHUT_RDWR)
        self.t.join(5)


def start_dialer(args: argparse.Namespace, child: Any) -> Any:
    if args.dialer == "thread":
        return DialerThread(args, child)
    if args.dialer == "fork" :
        return DialerFork(args, child)
    return DialerProc(args, child)


class DialerFork:
    """The dialer in a forked child of the forwarder's process (--dialer fork)."""

    def __init__(self, args: argparse.Namespace, child: Any) -> None:
        from rootless.ports.dialer import Dialer
        self.pid = os.fork()
        if self.pid == 0:
            try:
                Dialer(child).run()
            finally:
                os._exit(0)
        child.close()

    def stop(self) -> None:
        import signal
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)


def instrument(loop: Any, lfd: int, port: int) -> dict[str, list[int]]:
    """Time each event handler the loop runs, by the connection phase it serves (ns, each
    call): the listener's; a connection's first event on the client side and on the dial side
    (told apart by the local port), and later ones. Works whatever the handlers are."""
    import socket
    timers: dict[str, list[int]] = {}
    pc = time.perf_counter_ns
    fresh: set[int] = set()
    handlers = loop._handlers

    class Timed(dict):  # type: ignore[type-arg]
        def get(self, fd: int, default: Any = None) -> Any:
            h = dict.get(self, fd, default)
            if h is None:
                return h
            if fd == lfd:
                key = "1 accept (accept, admit, dial)"
            else:
                try:
                    with socket.socket(fileno=os.dup(fd)) as s:
                        name = s.getsockname()
                except OSError:
                    name = ""
                if not isinstance(name, tuple):
                    key = "0 other (dialer replies, the client's pipe)"
                else:
                    first = fd in fresh
                    fresh.discard(fd)
                    key = (("3 client side" if name[1] == port else "2 dial side")
                           + (", its first event" if first else ", later events"))

            def timed(ev: int) -> None:
                before = set(self) if fd == lfd else None
                t = pc()
                try:
                    h(ev)
                finally:
                    timers.setdefault(key, []).append(pc() - t)
                    if before is not None:
                        fresh.update(set(self) - before)
            return timed

    loop._handlers = Timed(handlers)
    return timers


def report_profile(prof: object, n: int, top: int) -> dict[str, object]:
    import pstats
    st = pstats.Stats(prof)  # type: ignore[arg-type]
    rows = []
    total_calls = 0
    for (file, line, fn), (_cc, nc, tt, ct, _) in st.stats.items():  # type: ignore[attr-defined]
        total_calls += nc
        rows.append((tt, nc, f"{Path(file).name}:{line}:{fn}", ct))
    rows.sort(reverse=True)
    return {"calls_per_conn": total_calls / n,
            "top": [(name, round(nc / n, 2), round(tt / n * 1e6, 2), round(ct / n * 1e6, 2))
                    for tt, nc, name, ct in rows[:top]]}


def report_strace(path: str, n: int) -> dict[str, float]:
    rows = {}
    for line in Path(path).read_text().splitlines():
        p = line.split()
        if len(p) >= 5 and p[0][0].isdigit() and p[-1] != "total":
            try:
                rows[p[-1]] = round(int(p[3]) / n, 2)
            except ValueError:
                continue
    os.unlink(path)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=["rate", "phases", "cprofile", "strace", "perf"],
                    default="rate")
    ap.add_argument("--rr", action="store_true",
                    help="round trips on open connections instead of new connections")
    ap.add_argument("--pre", type=int, default=0,
                    help="--rr: short connections each client makes before its round trips")
    ap.add_argument("--conns", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tree", action="append", help="repo trees to compare (default: this)")
    ap.add_argument("--clients", type=int, default=1,
                    help="client processes side by side (each makes conns/clients)")
    ap.add_argument("--inside-routing", action="store_true",
                    help="the netns gets clientaddr's INSIDE policy rule and sysctls")
    ap.add_argument("--top", type=int, default=30, help="cprofile: functions shown")
    ap.add_argument("--dialer", choices=["process", "thread", "fork"], action="append",
                    help="how the dialer runs: a process (burrow's forwarder), a thread "
                         "(burrow-rootlessport), a forked child; several alternate in one run")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: it makes a netns")
    if args.worker:
        args.tree = args.tree[0]
        args.dialer = (args.dialer or ["process"])[0]
        worker(args)
        return 0
    # Variants: every tree with every way of running the dialer, alternating in one run.
    variants = [(t, d) for t in args.tree or [str(REPO)] for d in args.dialer or ["process"]]
    names = [t if not args.dialer else f"{t}[{d}]" for t, d in variants]
    got: dict[str, list[dict[str, object]]] = {t: [] for t in names}
    print(f"# {args.mode}, {args.conns} sequential connections x {args.rounds} rounds, "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    order = list(zip(names, variants, strict=True))
    unit = "rt/s  " if args.rr else "conn/s"
    for r in range(args.rounds):
        for name, (t, dialer) in (order if r % 2 == 0 else order[::-1]):
            res = subprocess.run([sys.executable, __file__, "--worker", "--mode", args.mode,
                                  "--conns", str(args.conns), "--tree", t, "--dialer", dialer,
                                  "--clients", str(args.clients),
                                  *(["--inside-routing"] if args.inside_routing else []),
                                  *(["--rr"] if args.rr else []), "--pre", str(args.pre), "--top", str(args.top)],
                                 capture_output=True, text=True, timeout=600)
            if res.returncode:
                raise SystemExit(res.stderr[-2000:])
            d = json.loads(res.stdout.strip().splitlines()[-1])
            got[name].append(d)
            client = (f"round trip {d['rtt']:6.1f} us" if args.rr else
                      f"client: connect {d['connect']:5.1f}  first byte {d['first_byte']:6.1f}  "
                      f"eof {d['eof']:5.1f}  close {d['close']:4.1f} us")
            print(f"{name:24} {d['rate']:7.0f} {unit}  user {d['user_us']:5.1f} us  sys "
                  f"{d['sys_us']:5.1f} us  {client}"
                  f"  (load {os.getloadavg()[0]:.2f})"
                  + (f"  client errors {d['errors']}, shed {d['shed']}"
                     if d["errors"] or d["shed"] else ""), flush=True)
            for k in ("handlers", "calls", "syscalls", "perf"):
                if k in d:
                    print(json.dumps(d[k], indent=1))
    import statistics
    for t in names:
        med = {k: statistics.median(float(d[k]) for d in got[t])  # type: ignore[arg-type]
               for k in ("rate", "user_us", "sys_us", *(("rtt",) if args.rr else ()))}
        print(f"median {t:17} {med['rate']:7.0f} {unit}  user {med['user_us']:5.1f} us  "
              f"sys {med['sys_us']:5.1f} us  user+sys {med['user_us'] + med['sys_us']:5.1f} us"
              f"  (best {max(float(d['rate']) for d in got[t]):.0f} conn/s, least user+sys "  # type: ignore[arg-type]
              f"{min(float(d['user_us']) + float(d['sys_us']) for d in got[t]):.1f} us)")  # type: ignore[arg-type]
        got[t].append(med)  # type: ignore[arg-type]
    for t in names[1:]:
        m, b = got[t][-1], got[names[0]][-1]
        print(f"{t} / {names[0]}: {unit.strip()} {float(m['rate']) / float(b['rate']):.3f}x, "  # type: ignore[arg-type]
              + (f"round trip {float(m['rtt']) / float(b['rtt']):.3f}x, " if args.rr else "")  # type: ignore[arg-type]
              + f"user CPU {float(m['user_us']) / float(b['user_us']):.3f}x")  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
