"""The HTTP layer under the OpenAI-compatible backend, swappable in tests (as httpx's is).

:class:`AiohttpTransport` is the real one. aiohttp is chosen for speed: forwarding one call to a
loopback server costs about 0.17 ms of CPU with it against 0.8 ms with httpx (measured on the
reference machine, see DESIGN.md), and a proxy pays that on every request. A transport raises
only the built-in :class:`ConnectionError` (could not connect, or the connection broke) and
:class:`TimeoutError`; the backend turns those into routecast's errors, naming the model.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import orjson

if TYPE_CHECKING:
    import aiohttp


#: The longest line a stream may send (one SSE event: a large tool call fits).
MAX_LINE_BYTES = 1 << 22

# -- JSON, the wire's format -------------------------------------------------------------------
#
# orjson parses a 2 kB request in ~1 us and writes it in ~1 us, against ~6 and ~7 us for the
# standard library; a proxied request reads and writes JSON four times, a stream once per event.
# Wherever orjson would differ from the standard library, the standard library decides.

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

# Maps every digit to b"0" and every other byte to b" ". Text holding no run of 19 digits has
# no integer that orjson reads differently (it reads integers beyond 64 bits as floats, and 19
# digits can already pass -2**63); the test costs ~2 us on a 2 kB body, a regex ~19 us.
_DIGITS = bytes(48 if 48 <= i <= 57 else 32 for i in range(256))
_LONG_NUMBER = b"0" * 19
# orjson reads nesting up to 1024 deep, the standard library only to its recursion limit (~1000,
# less the caller's stack): text with fewer opening brackets than this cannot tell them apart.
_FEW_BRACKETS = 500


def _orjson_reads_it_alike(text: bytes) -> bool:
    return (_LONG_NUMBER not in text.translate(_DIGITS)
            and text.count(b"[") + text.count(b"{") < _FEW_BRACKETS)


def json_dumps(data: Any) -> bytes:
    """Compact JSON as UTF-8 bytes (non-ASCII text kept as is, as OpenAI sends it)."""
    try:
        return orjson.dumps(data)
    except TypeError:  # integers beyond 64 bits, lone surrogates, non-str keys, deep nesting
        pass
    try:
        return _encode(data).encode()
    except UnicodeEncodeError:  # a lone surrogate (JSON may escape one): escape it again
        return json.dumps(data, separators=(",", ":")).encode()


def json_reader(text: bytes) -> Callable[[bytes], Any]:
    """:func:`json_loads` for the many documents cut from ``text`` (a block of stream events):
    when the whole block passes its tests, they are not repeated for each document."""
    return _orjson_first if _orjson_reads_it_alike(text) else json_loads


def _orjson_first(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def json_loads(raw: bytes, parse_constant: Callable[[str], Any] | None = None) -> Any:
    """``json.loads(raw, parse_constant=...)``, the same result, faster.

    orjson rejects ``NaN`` and ``Infinity``, lone surrogates, UTF-16 and every malformed text;
    those, long integers and deep nesting go to the standard library, which accepts or words
    the error exactly as before (``ValueError``, ``RecursionError``)."""
    if _orjson_reads_it_alike(raw):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw, parse_constant=parse_constant)


class TransportResponse(Protocol):
    """An upstream's answer whose status and headers have arrived; the body may not have."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    async def read(self) -> bytes:
        """The whole body (then the connection goes back to the pool)."""
        ...

    def lines(self) -> AsyncIterator[bytes]:
        """The body's non-blank lines, as they arrive (for server-sent events); line ends may
        be kept.

        A response may also offer ``blocks()``, used instead when present: the body cut at
        line ends, each piece holding every whole line one network read brought (blank lines
        and line ends included). A burst of events is then handled as one piece."""
        ...

    def release(self) -> None:
        """Give the connection back (or drop it, if the body was not read to the end)."""
        ...


class Transport(Protocol):
    async def post(self, url: str, body: bytes, headers: Mapping[str, str]
                   ) -> TransportResponse:
        """Send ``body`` (JSON) and wait for the status line and headers."""
        ...

    async def aclose(self) -> None: ...


class AiohttpTransport:
    """Pooled keep-alive connections through one :class:`aiohttp.ClientSession`.

    ``connect_timeout_s`` bounds opening a connection; ``read_timeout_s`` bounds each wait for
    data (the time to the first byte, and every gap in a stream), not the whole answer, so a
    long generation that keeps streaming is never cut off.

    A whole body (:meth:`TransportResponse.read`) must arrive at ``min_read_bytes_per_s`` at
    least, measured from its first byte once a second has passed (0: no limit). An upstream that
    trickles a byte a second never trips the read timeout, yet would hold the request to its
    deadline; a model server sends a finished answer at network speed.
    """

    def __init__(self, *, connect_timeout_s: float = 5.0, read_timeout_s: float = 120.0,
                 max_connections: int = 100, min_read_bytes_per_s: float = 1024.0) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.max_connections = max_connections
        self.min_read_bytes_per_s = min_read_bytes_per_s
        self._session: aiohttp.ClientSession | None = None

    def open(self) -> aiohttp.ClientSession:
        """The session, created on first call (inside the running loop)."""
        if self._session is not None:
            return self._session
        # Imported here: aiohttp costs ~100 ms to import, and a session needs a running loop.
        import aiohttp

        connector = aiohttp.TCPConnector(limit=self.max_connections, keepalive_timeout=30,
                                         ttl_dns_cache=300)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout_s,
                                        sock_read=self.read_timeout_s)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=timeout,
            # Nothing of the client's environment leaks in: no proxies, cookies or netrc.
            trust_env=False, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=True,
            skip_auto_headers=("User-Agent",))
        return self._session

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]
                   ) -> TransportResponse:
        import aiohttp

        session = self._session or self.open()
        try:
            resp = await session.post(url, data=body, headers=headers)
        except TimeoutError as e:  # also asyncio's (an alias since 3.11)
            raise TimeoutError(f"no answer within {self.read_timeout_s:g} s "
                               f"(connect limit {self.connect_timeout_s:g} s)") from e
        except (aiohttp.ClientError, OSError) as e:
            raise ConnectionError(describe(e)) from e
        return _AiohttpResponse(resp, self.read_timeout_s, self.min_read_bytes_per_s)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _AiohttpResponse:
    def __init__(self, resp: aiohttp.ClientResponse, read_timeout_s: float,
                 min_read_bytes_per_s: float = 0.0) -> None:
        self._resp = resp
        self._read_timeout_s = read_timeout_s
        self._min_rate = min_read_bytes_per_s

    @property
    def status(self) -> int:
        return self._resp.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._resp.headers

    async def read(self) -> bytes:
        import aiohttp

        try:
            content = self._resp.content
            if not self._min_rate or content.is_eof():  # all here (the usual case): at once
                return await self._resp.read()
            return await _read_at_rate(content, self._min_rate)
        except TimeoutError as e:
            if e.args:  # the rate check's own words
                raise  # also asyncio's (an alias since 3.11)
            raise TimeoutError(f"the answer stalled for {self._read_timeout_s:g} s") from e
        except (aiohttp.ClientError, OSError) as e:
            raise ConnectionError(describe(e)) from e
        finally:
            self._resp.release()

    async def lines(self) -> AsyncIterator[bytes]:
        async for block in self.blocks():
            for line in block.split(b"\n"):
                if line.strip():
                    yield line

    def blocks(self) -> AsyncIterator[bytes]:
        return cut_at_lines(self._reads())

    async def _reads(self) -> AsyncIterator[bytes]:
        import aiohttp

        try:
            async for data in self._resp.content.iter_any():
                yield data
        except TimeoutError as e:  # also asyncio's (an alias since 3.11)
            raise TimeoutError(f"the stream stalled for {self._read_timeout_s:g} s") from e
        except (aiohttp.ClientError, OSError) as e:
            raise ConnectionError(describe(e)) from e

    def release(self) -> None:
        self._resp.release()


#: Seconds a body may take before its rate is checked (a short answer may come in one slow read).
RATE_GRACE_S = 1.0


async def _read_at_rate(content: aiohttp.StreamReader, min_rate: float) -> bytes:
    """The rest of a body, failing (:class:`TimeoutError`) once it falls below ``min_rate``
    bytes a second on average, a second or more after its first byte came. (Not after the
    headers: a server may send those early and the body when the answer is done; the wait for
    a first byte is the read timeout's.)"""
    import asyncio

    loop = asyncio.get_running_loop()
    t0: float | None = None
    parts: list[bytes] = []
    size = 0
    async for data in content.iter_any():
        if t0 is None:
            t0 = loop.time()
        parts.append(data)
        size += len(data)
        elapsed = loop.time() - t0
        if elapsed >= RATE_GRACE_S and size < min_rate * elapsed:
            raise TimeoutError(f"the answer arrived at {size / elapsed:.0f} bytes/s, slower than "
                               f"{min_rate:g} (min_read_bytes_per_s)")
    return b"".join(parts)


async def cut_at_lines(reads: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """What each read brings, up to its last line end, as one piece (for ``blocks()``).

    Pieces go on whole rather than line by line: a burst of SSE events then costs every layer
    above one step, not one per event. A line longer than :data:`MAX_LINE_BYTES` is an error
    (:class:`ConnectionError`); what follows the last line end comes last, if not blank.
    """
    pending = b""
    async for data in reads:
        end = data.rfind(b"\n") + 1
        if not end:
            pending += data
            if len(pending) > MAX_LINE_BYTES:
                raise ConnectionError(f"a stream line exceeds {MAX_LINE_BYTES} bytes")
            continue
        if end == len(data):
            piece = pending + data if pending else data
            pending = b""
        else:
            piece = pending + data[:end]
            pending = data[end:]
        yield piece
    if pending.strip():
        yield pending


def describe(e: BaseException) -> str:
    """An exception as error text, cut short."""
    text = str(e) or type(e).__name__
    return text if len(text) < 300 else text[:300] + "..."

