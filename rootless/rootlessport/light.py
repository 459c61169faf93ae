"""Phase 1's stand-ins for stdlib modules whose import would slow `podman run -p`.

Phase 1 runs between Podman's exec and the ready byte, while `podman run` waits; importing
`typing`, `socket`, `json` and `signal` there (with `enum`, `re`, `selectors`, `collections`
behind them) cost more CPU than the interpreter's own start-up. Type checkers see the real
thing; at run time:
- NamedTuple: the class syntax of typing.NamedTuple (fields from the annotations, methods, a
  docstring; no field defaults), an immutable tuple subclass with the fields as read-only
  properties, keyword arguments, `_fields`, `_replace` and a readable repr;
- sockets stay `_socket.socket`s until phase 2 makes them `socket.socket`s (forward.adopt);
- JSON is read by `_json`'s C scanner (netns.jsonscan).
"""

from __future__ import annotations

import _operator

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple as NamedTuple
else:

    def _record(name: str, ns: dict[str, object]) -> type:
        fields = tuple(ns.get("__annotations__", {}))
        if any(f in ns for f in fields):
            raise TypeError(f"{name}: light.NamedTuple fields take no defaults")

        def __new__(cls: type, *args: object, **kw: object) -> tuple[object, ...]:
            try:
                values = args + tuple(kw.pop(f) for f in fields[len(args):])
            except KeyError as e:
                raise TypeError(f"{name}() missing argument {e}") from None
            if kw or len(values) != len(fields):
                raise TypeError(f"{name}() takes {len(fields)} arguments ({fields})")
            return tuple.__new__(cls, values)

        def __repr__(self: tuple[object, ...]) -> str:
            return f"{name}({', '.join(f'{f}={v!r}' for f, v in zip(fields, self, strict=True))})"

        def _replace(self: tuple[object, ...], **kw: object) -> object:
            values = [kw.pop(f, v) for f, v in zip(fields, self, strict=True)]
            if kw:
                raise ValueError(f"{name}._replace: no fields {sorted(kw)}")  # as namedtuple
            return type(self)(*values)

        body = {k: v for k, v in ns.items() if k not in ("__annotations__", "__qualname__")}
        body.update(__slots__=(), _fields=fields, __new__=__new__, __repr__=__repr__,
                    _replace=_replace, __getnewargs__=tuple)
        body.update({f: property(_operator.itemgetter(i), doc=f"field {i}") for i, f in enumerate(fields)})
        return type(name, (tuple,), body)

    class _Meta(type):
        def __new__(mcls, name: str, bases: tuple[type, ...], ns: dict[str, object]) -> type:
            if not bases:  # NamedTuple itself
                return super().__new__(mcls, name, bases, ns)
            return _record(name, ns)

    class NamedTuple(metaclass=_Meta):
        pass
