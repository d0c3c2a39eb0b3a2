"""JSON on the wire: orjson where it reads and writes exactly as the standard library would,
the standard library wherever the two differ (big integers, NaN, lone surrogates, deep
nesting), so switching libraries changed no request or answer."""

from __future__ import annotations

import math

import pytest

from routecast.backends.transport import json_dumps, json_loads, json_reader


def test_json_reads_and_writes_like_the_standard_library() -> None:
    big = b'{"seed": 123456789012345678901234567890, "neg": -9223372036854775809}'
    assert json_loads(big) == {"seed": 123456789012345678901234567890,
                               "neg": -9223372036854775809}  # orjson would give floats
    assert json_dumps(json_loads(big)) == big.replace(b": ", b":").replace(b", ", b",")
    lone = b'{"t": "\\ud800"}'  # a lone surrogate: orjson refuses it, json keeps it
    assert json_loads(lone) == {"t": "\ud800"}
    assert json_dumps({"t": "\ud800"}) == b'{"t":"\\ud800"}'  # escaped: valid UTF-8
    assert json_dumps({"text": "héllo ☃", "n": 1.5}) == '{"text":"héllo ☃","n":1.5}'.encode()
    assert math.isnan(json_loads(b'{"x": NaN}')["x"])  # as json reads it (the server refuses)
    with pytest.raises(RecursionError):  # orjson reads 1024 deep; the standard library decides
        json_loads(b"[" * 1010 + b"]" * 1010)
    block = b'data: {"a": 1}\n\ndata: {"b": 12345678901234567890123}\n\n'
    assert json_reader(block)(b'{"b": 12345678901234567890123}') == {
        "b": 12345678901234567890123}
