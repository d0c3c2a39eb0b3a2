"""A TCP forwarder that tests can cut and restore: Redis "going down" without stopping it.

``with TcpProxy(6379) as proxy:`` listens on a free local port and forwards each connection to
``127.0.0.1:6379``; :meth:`TcpProxy.cut` closes every connection and stops listening (clients
see resets, then refused connections), :meth:`TcpProxy.restore` listens again on the same port.
:meth:`TcpProxy.stall` holds every byte in both directions (a network that drops packets:
calls hang instead of failing) until :meth:`TcpProxy.flow`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading


class TcpProxy:
    """See the module docstring; runs its own event loop in a daemon thread."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port: int = s.getsockname()[1]
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing: asyncio.Event | None = None

    def __enter__(self) -> TcpProxy:
        self.thread.start()
        self.restore()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cut()

        async def finish() -> None:  # the pipes of the aborted connections end
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self._run(finish())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    def _run(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.loop).result(5)  # type: ignore[arg-type]

    def stall(self) -> None:
        """Hold every byte (open connections and new ones) until :meth:`flow`."""
        async def hold() -> None:
            self._event().clear()
        self._run(hold())

    def flow(self) -> None:
        """Pass bytes again, the held ones first."""
        async def release() -> None:
            self._event().set()
        self._run(release())

    def _event(self) -> asyncio.Event:
        if self._flowing is None:  # created on the proxy's own loop
            self._flowing = asyncio.Event()
            self._flowing.set()
        return self._flowing

    def restore(self) -> None:
        """Listen (again) on :attr:`port`."""
        async def listen() -> None:
            self._server = await asyncio.start_server(self._pipe, "127.0.0.1", self.port,
                                                      reuse_address=True)
        self._run(listen())

    def cut(self) -> None:
        """Stop listening and reset every open connection."""
        async def close() -> None:
            if self._server is not None:
                self._server.close()
                self._server = None
            for writer in list(self._writers):
                writer.transport.abort()
            self._writers.clear()
        self._run(close())

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    await self._event().wait()
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))
        self._writers -= {writer, up_writer}
