"""A control packet of 4 KiB of "[" made json.loads raise RecursionError, which was answered as
an "internal error" with a traceback in the log; it is a bad packet like any other."""

from __future__ import annotations

import pytest

from rootless.rootlessport.config import ConfigError
from rootless.rootlessport.control import parse_child_ip


def test_deeply_nested_json_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="expected a JSON string"):
        parse_child_ip(b"[" * 4096)
