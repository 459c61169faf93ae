"""What the CLI prints, the same way for every command (pure: strings in, strings out).

- `--format`: `table` or `json` on every listing; where Podman takes a Go template
  (`network ls`, `network inspect`), a small subset of it too. Anything else is refused,
  naming the allowed values.
- tables: upper-case headings, booleans as `yes`/`no`, lists comma-joined.
- times: RFC 3339 in UTC (`rootless.records.rfc3339`).
- commands on several names go on past a failure and report every failure at the end.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from netns.errors import BurrowError

FORMATS = ("table", "json")
_FIELD = re.compile(r"\{\{\s*(json\s+)?\.([A-Za-z0-9_.]*)\s*\}\}")
_ANY_ACTION = re.compile(r"\{\{.*?\}\}")


def use_colour(stream: TextIO) -> bool:
    """Colour only on a terminal, and never with NO_COLOR set (https://no-color.org) or a
    dumb terminal."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and not os.environ.get("NO_COLOR") and \
        os.environ.get("TERM") != "dumb"


def bold(text: str, stream: TextIO | None = None) -> str:
    return f"\033[1m{text}\033[0m" if use_colour(stream or sys.stdout) else text


def check_format(fmt: str, *, template: bool = False) -> str:
    """`table`, `json`, or (where `template`) a Go template such as `{{.Name}}`."""
    if fmt in FORMATS or (template and "{{" in fmt):
        return fmt
    allowed = "table, json or a Go template such as '{{.Name}}'" if template else "table or json"
    raise BurrowError(f"unknown --format {fmt!r}; use {allowed}")


def yes_no(v: Any) -> Any:
    return ("yes" if v else "no") if isinstance(v, bool) else v


def cell(v: Any) -> str:
    if isinstance(v, list | tuple):
        return ",".join(str(yes_no(x)) for x in v)
    if isinstance(v, Mapping):
        return ",".join(f"{k}={cell(x)}" for k, x in v.items())
    return "" if v is None else str(yes_no(v))


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], *,
          heading: bool = True) -> list[str]:
    cells = [[c.upper() for c in columns]] * heading + [
        [cell(r.get(c)) for c in columns] for r in rows]
    if not cells:
        return []
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
            for row in cells]


def render(rows: Sequence[Mapping[str, Any]], fmt: str, columns: Sequence[str], *,
           heading: bool = True, template_fields: Mapping[str, str] | None = None) -> str:
    """A listing as `fmt`; `template_fields` maps Go-template names (`Name`) to row keys."""
    if fmt == "json":
        return json.dumps(list(rows), indent=2)
    if fmt == "table":
        return "\n".join(table(rows, columns, heading=heading))
    if template_fields is not None and "{{" in fmt:
        return "\n".join(go_template(fmt, r, template_fields) for r in rows)
    raise BurrowError(f"unknown --format {fmt!r}; use table or json")


def go_template(tpl: str, row: Mapping[str, Any], fields: Mapping[str, str]) -> str:
    """The part of Go's text/template that scripts use with Podman: `{{.Field}}`,
    `{{.Field.Key}}`, `{{json .Field}}`, `{{json .}}`; `\\t` and `\\n` as in Podman."""
    tpl = tpl.removeprefix("table ").replace("\\t", "\t").replace("\\n", "\n")

    def one(m: re.Match[str]) -> str:
        as_json, path = bool(m.group(1)), m.group(2)
        value: Any = row
        if path:
            head, *rest = path.split(".")
            if head not in fields:
                raise BurrowError(f"--format: no field .{head}; fields: "
                                  f"{', '.join('.' + f for f in fields)}")
            value = row.get(fields[head])
            for key in rest:
                value = value.get(key) if isinstance(value, Mapping) else None
        if as_json:
            return json.dumps(value)
        if isinstance(value, Mapping | list):
            return json.dumps(value) if isinstance(value, Mapping) else " ".join(
                json.dumps(v) if isinstance(v, Mapping) else str(v) for v in value)
        return "" if value is None else str(value).lower() if isinstance(value, bool) \
            else str(value)

    out = _FIELD.sub(one, tpl)
    leftover = _ANY_ACTION.search(out)
    if leftover:
        raise BurrowError(f"--format: {leftover.group(0)!r} is not supported; use "
                          "{{.Field}}, {{.Field.Key}}, {{json .Field}} or {{json .}}")
    return out


def each(names: Sequence[str], act: Callable[[str], str | None], doing: str) -> None:
    """Run `act` on every name, printing what it returns; go on past a failure (said on
    stderr as it happens), and end with one error naming every name that failed."""
    failed: list[str] = []
    for n in names:
        try:
            line = act(n)
        except BurrowError as e:
            print(f"Error: {e}", file=sys.stderr, flush=True)
            failed.append(n)
            continue
        if line is not None:
            print(line, flush=True)
    if failed:
        raise BurrowError(f"{doing} failed for {len(failed)} of {len(names)}: "
                          f"{', '.join(failed)}")
