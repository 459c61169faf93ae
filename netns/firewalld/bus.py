"""One D-Bus connection to the system bus, through jeepney.

The address comes from `address.system_address` (the request's `DBUS_SYSTEM_BUS_ADDRESS`, else
the standard socket; empty means "no bus", and `open_system` then returns None without any I/O).

Cost when nothing is there: a missing socket file is one stat, a dead one one refused connect;
neither waits. Every call has a deadline, so a hung daemon gives an error, never a hang.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from jeepney import DBusAddress, HeaderFields, MatchRule, MessageType, new_method_call
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import DBusConnection, DBusConnectionBase, Proxy, prep_socket
from jeepney.io.common import MessageFilters
from jeepney.low_level import Message

from netns.errors import BurrowError
from netns.firewalld.address import maybe_present, socket_path, system_address

# Deadlines: the bus daemon answers in microseconds; firewalld can take seconds (a reload
# rebuilds its whole ruleset), Netavark's zbus waits 25 s. A dead peer must not hang setup.
AUTH_TIMEOUT = 2.0
CALL_TIMEOUT = 25.0


class BusError(BurrowError):
    """A D-Bus failure; `name` is the D-Bus error name when the peer replied with one."""

    def __init__(self, message: str, *, exit_code: int = 1, name: str = "") -> None:
        super().__init__(message, exit_code=exit_code)
        self.name = name

    def wrap(self, context: str) -> BusError:
        err = BusError(f"{context}: {self.message}", exit_code=self.exit_code, name=self.name)
        err.__cause__ = self
        return err


@dataclass(frozen=True)
class Call:
    """One method call's address: who, which object, which interface."""

    destination: str
    path: str
    interface: str


class Bus:
    """A connected, authenticated bus. Use as a context manager, or `close()` it."""

    def __init__(self, conn: DBusConnection, address: str) -> None:
        self._conn = conn
        self.address = address

    def __enter__(self) -> Bus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    @property
    def unique_name(self) -> str:
        return str(self._conn.unique_name)

    def call(self, target: Call, method: str, signature: str | None = None,
             body: tuple[Any, ...] = (), *, timeout: float = CALL_TIMEOUT) -> tuple[Any, ...]:
        """Call `method` and return the reply's body; errors name the call and the bus."""
        where = f"DBus error: {target.interface}.{method} on {target.destination}"
        msg = new_method_call(DBusAddress(target.path, target.destination, target.interface),
                              method, signature, body)
        try:
            reply = self._conn.send_and_get_reply(msg, timeout=timeout)
        except TimeoutError as exc:
            raise BusError(f"{where}: no reply in {timeout:g} s") from exc
        except OSError as exc:
            raise BusError(f"{where}: connection to {self.address} lost: {exc}") from exc
        if reply.header.message_type == MessageType.error:
            name = str(reply.header.fields.get(HeaderFields.error_name, ""))
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            raise BusError(f"{where}: {name}" + (f": {text}" if text else ""), name=name)
        return tuple(reply.body)

    def name_has_owner(self, name: str) -> bool:
        """Whether some connection owns `name` (answered by the bus daemon itself)."""
        (owned,) = self.call(_DBUS, "NameHasOwner", "s", (name,), timeout=AUTH_TIMEOUT)
        return bool(owned)

    def name_owner(self, name: str) -> str:
        """The unique name of the connection owning `name`, "" when nobody does."""
        try:
            (owner,) = self.call(_DBUS, "GetNameOwner", "s", (name,), timeout=AUTH_TIMEOUT)
        except BusError as exc:
            if exc.name == "org.freedesktop.DBus.Error.NameHasNoOwner":
                return ""
            raise
        return str(owner)

    @contextmanager
    def signals(self, *rules: MatchRule, bufsize: int = 64) -> Iterator[SignalQueue]:
        """Subscribe to the signals matching any of `rules`, in one queue, for the block.

        The queue keeps the newest `bufsize`: a flood of signals costs no memory."""
        queue: deque[Message] = deque(maxlen=bufsize)
        with ExitStack() as stack:
            for rule in rules:
                self.call(_DBUS, "AddMatch", "s", (rule.serialise(),), timeout=AUTH_TIMEOUT)
                stack.enter_context(self._conn.filter(rule, queue=queue))
            yield SignalQueue(self._conn, queue)


class SignalQueue:
    """Matched signals, received in order; `wait` blocks up to a timeout (None: forever)."""

    def __init__(self, conn: DBusConnection, queue: Any) -> None:
        self._conn = conn
        self._queue = queue

    def wait(self, timeout: float | None = None) -> Message | None:
        """The next matching signal, or None when `timeout` passes first."""
        try:
            msg: Message = self._conn.recv_until_filtered(self._queue, timeout=timeout)
            return msg
        except TimeoutError:
            return None
        except OSError as exc:
            raise BusError(f"DBus error: waiting for a signal: connection lost: {exc}") from exc


_DBUS = Call(message_bus.bus_name, message_bus.object_path, message_bus.interface)


def open_system(env: Mapping[str, str]) -> Bus | None:
    """The system bus, or None when there is none to talk to (disabled, no socket, refused).

    Any other failure (a bus that accepts but will not authenticate) is a BusError.
    """
    address = system_address(env)
    if address is None or not maybe_present(env):
        return None  # the common case without D-Bus: one stat, no connect
    path = socket_path(address)
    if path is None:
        raise BusError(f"DBus error: unusable bus address {address!r}: burrow speaks unix sockets only")
    try:
        sock = prep_socket(path, timeout=AUTH_TIMEOUT)
    except (FileNotFoundError, ConnectionRefusedError):
        return None  # a socket file nobody listens on (the daemon stopped)
    except (OSError, TimeoutError, ValueError) as exc:
        raise BusError(f"DBus error: connect to {address}: {exc}") from exc
    try:
        conn = _Connection(sock)
    except (OSError, TimeoutError, ValueError) as exc:
        sock.close()
        raise BusError(f"DBus error: connect to {address}: Hello: {exc}") from exc
    return Bus(conn, address)


class _Connection(DBusConnection):  # type: ignore[misc]  # jeepney ships no types
    """jeepney's blocking connection, whose Hello has a deadline (jeepney's waits forever)."""

    def __init__(self, sock: Any) -> None:
        DBusConnectionBase.__init__(self, sock, False)
        self._filters = MessageFilters()
        self.bus_proxy = Proxy(message_bus, self, timeout=AUTH_TIMEOUT)
        self.unique_name = self.bus_proxy.Hello()[0]


__all__ = ["Bus", "BusError", "Call", "SignalQueue", "open_system", "system_address"]
