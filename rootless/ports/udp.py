"""UDP: one flow per client address and port, a connected socket inside the sandbox each.

A flow costs one fd and lives until `timeout` idle seconds pass. Any host process can open
flows by sending from new source ports, so flows are capped per client and in total; at a cap
the least recently used flow (of that client, else of all) is shed, so a flood can cost its
sender its own older flows but never the forwarder. Until the first reply a flow keeps what
it sent (bounded) so that a refusal (ICMP port unreachable) can be retried on the sandbox's
other address family.
"""

from __future__ import annotations

import errno
import socket
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from netns.loop import Loop
from rootless.ports.budget import Guard
from rootless.ports.clientaddr import Plan
from rootless.ports.pool import DialerPool, Ticket
from rootless.ports.target import Listener

QUEUE_BYTES = 65536  # kept per flow until its first reply
QUEUE_DATAGRAMS = 64
QUEUE_TOTAL = 16 << 20  # kept over all flows: thousands of silent flows must not eat memory
MAX_READS = 256  # datagrams taken off one socket per wakeup: the rest wait their turn
FlowKey = tuple[int, Any]  # (listener fd, client address)


@dataclass(slots=True, eq=False)
class UdpFlow:
    lst: Listener
    key: FlowKey
    client: str
    candidates: list[Plan]
    b: socket.socket | None = None
    queue: list[bytes] | None = field(default_factory=list)  # None once answered
    queued: int = 0
    closed: bool = False
    ticket: Ticket | None = None  # waiting for a socket from the dialer
    last: float = field(default_factory=time.monotonic)



class UdpProxy:
    def __init__(self, loop: Loop, pool: DialerPool, guard: Guard, timeout: float) -> None:
        self.loop, self.pool, self.guard, self.timeout = loop, pool, guard, timeout
        self.flows: OrderedDict[FlowKey, UdpFlow] = OrderedDict()  # least recently used first
        self.by_client: dict[str, OrderedDict[FlowKey, UdpFlow]] = {}
        self.queued = 0  # bytes kept by all flows for a retry
        loop.call_later(self._sweep_every(), self._sweep)

    def listen(self, lst: Listener) -> None:
        self.loop.add(lst.sock.fileno(), partial(self._on_datagram, lst))

    def _on_datagram(self, lst: Listener, ev: int) -> None:
        for _ in range(MAX_READS):
            try:
                data, addr = lst.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an error queued on the socket; the next read gets data again
            key = (lst.sock.fileno(), addr)
            flow = self.flows.get(key)
            if flow is None:
                self._open(lst, key, addr, data)
                continue
            self._touch(flow)
            if self._keep(flow, data) and flow.b is None:
                continue  # its socket is still on the way: sent once it comes
            if flow.b is None:
                self.guard.shed.udp_datagrams_dropped += 1
                continue
            self._send(flow, data)

    def _keep(self, flow: UdpFlow, data: bytes) -> bool:
        """Hold a datagram for a retry; False if over a bound (it is still sent once)."""
        if flow.queue is None:
            return True
        n = len(data)
        if len(flow.queue) >= QUEUE_DATAGRAMS or flow.queued + n > QUEUE_BYTES \
                or self.queued + n > QUEUE_TOTAL:
            return False
        flow.queue.append(data)
        flow.queued += n
        self.queued += n
        return True

    def _forget_queue(self, flow: UdpFlow) -> None:
        self.queued -= flow.queued
        flow.queue, flow.queued = None, 0

    def _touch(self, flow: UdpFlow) -> None:
        flow.last = time.monotonic()
        self.flows.move_to_end(flow.key)
        self.by_client[flow.client].move_to_end(flow.key)

    def _open(self, lst: Listener, key: FlowKey, addr: Any, data: bytes) -> None:
        client, v4 = self.guard.client_of(addr[0])
        self._make_room(client)
        # Datagrams that come before the flow's socket join its queue: without it each would
        # open a flow of its own, and the server would see several source ports.
        plans = lst.target.plans(addr[0], addr[1], v4, lst.spec.keep_client, self.pool.avail)
        flow = UdpFlow(lst, key, client, plans)
        self._keep(flow, data)
        self.flows[key] = flow
        self.by_client.setdefault(client, OrderedDict())[key] = flow
        self._dial_next(flow)

    def _make_room(self, client: str) -> None:
        caps, shed = self.guard.caps(), self.guard.shed
        mine = self.by_client.get(client)
        if mine and len(mine) >= caps.udp_per_client:
            shed.udp_flows_shed_per_client += 1
            self.close_flow(next(iter(mine.values())))
            self.guard.ratelog.warn("udp-client", "a client has %d UDP flows, its cap: "
                                    "shedding its least recently used", caps.udp_per_client)
        elif len(self.flows) >= caps.udp_total:
            shed.udp_flows_shed_total += 1
            self.close_flow(next(iter(self.flows.values())))
            self.guard.ratelog.warn("udp", "%d UDP flows, the cap for fd limit %d: shedding "
                                    "the least recently used", caps.udp_total,
                                    self.guard.fd_limit)

    def _dial_next(self, flow: UdpFlow) -> None:
        if not flow.candidates:
            self.close_flow(flow)
            return
        p = flow.candidates.pop(0)
        ticket = self.pool.get((p.netns, p.family, "udp", p.mode),
                               partial(self._dial, flow, p))
        if ticket is not None:
            flow.ticket = ticket

    def _dial(self, flow: UdpFlow, p: Plan, b: socket.socket | None) -> None:
        flow.ticket = None
        if flow.closed or flow.lst.sock.fileno() < 0:  # shed, expired or unpublished meanwhile
            if b is not None:
                b.close()
            return
        if b is None:
            if p.fallback is not None:  # no transparent socket: the next way to dial
                flow.candidates.insert(0, p.fallback)
            else:
                self.guard.shed.dial_failed += not flow.candidates
            self._dial_next(flow)
            return
        if p.fallback is not None and not self.pool.avail.bind(b, p.bind):
            b.close()  # the client's address cannot be bound: the next way to dial
            flow.candidates.insert(0, p.fallback)
            self._dial_next(flow)
            return
        try:
            b.connect((p.ip, flow.lst.ctr_port))
        except OSError:
            b.close()
            self._dial_next(flow)
            return
        flow.b = b
        self.loop.add(b.fileno(), partial(self._from_backend, flow))
        for data in flow.queue or ():
            if not self._send(flow, data):
                return

    def _send(self, flow: UdpFlow, data: bytes) -> bool:
        assert flow.b is not None
        try:
            flow.b.send(data)
        except (BlockingIOError, InterruptedError):
            self.guard.shed.udp_datagrams_dropped += 1
        except OSError as e:  # an earlier datagram was refused (ICMP port unreachable)
            self._refused(flow, e.errno)
            return False
        return True

    def _refused(self, flow: UdpFlow, err: int | None) -> None:
        """Before any reply, try the other family (the server may be bound to that one)."""
        if flow.queue is not None and flow.candidates and err == errno.ECONNREFUSED:
            self._drop_backend(flow)
            self._dial_next(flow)
        else:
            self.close_flow(flow)

    def _from_backend(self, flow: UdpFlow, ev: int = 0) -> None:
        b = flow.b
        for _ in range(MAX_READS):
            if b is None or flow.closed:
                return
            try:
                data = b.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # ICMP port unreachable: the server is not (or no more) there
                self._refused(flow, e.errno)
                return
            if flow.queue is not None:
                self._forget_queue(flow)  # answered: no retry from here on
            self._touch(flow)
            try:
                flow.lst.sock.sendto(data, flow.key[1])
            except OSError:
                self.guard.shed.udp_datagrams_dropped += 1

    def _drop_backend(self, flow: UdpFlow) -> None:
        if flow.b is not None:
            self.loop.remove(flow.b.fileno())
            flow.b.close()
            flow.b = None

    def close_flow(self, flow: UdpFlow) -> None:
        if flow.closed:
            return
        flow.closed = True
        if flow.ticket is not None:  # no socket need come for it any more
            self.pool.cancel(flow.ticket)
            flow.ticket = None
        self._forget_queue(flow)
        self._drop_backend(flow)
        self.flows.pop(flow.key, None)
        mine = self.by_client.get(flow.client)
        if mine is not None:
            mine.pop(flow.key, None)
            if not mine:
                del self.by_client[flow.client]

    def close_listener(self, lst: Listener) -> None:
        for flow in [f for f in self.flows.values() if f.lst is lst]:
            self.close_flow(flow)

    def _sweep_every(self) -> float:
        return max(0.05, min(1.0, self.timeout / 2))

    def _sweep(self) -> None:
        """Expire idle flows: the least recently used come first, so stop at the first live."""
        self.loop.call_later(self._sweep_every(), self._sweep)  # first: a fault must not end it
        deadline = time.monotonic() - self.timeout
        while self.flows:
            flow = next(iter(self.flows.values()))
            if flow.last > deadline:
                break
            self.close_flow(flow)
