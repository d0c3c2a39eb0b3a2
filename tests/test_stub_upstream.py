"""The tests' own servers: sockets that uvicorn accepts answer without a Nagle stall."""

from __future__ import annotations

import gc
import http.client
import json
import socket

from tests.stub_upstream import LiveServer, StubUpstream


def accepted_socket(live: LiveServer, client: socket.socket) -> socket.socket | None:
    """The server side of ``client``'s connection to ``live``, found among live objects:
    uvicorn keeps it inside its asyncio transport and exposes none. Other socket objects
    (of earlier tests, some closed under them) are passed over."""
    for obj in gc.get_objects():
        if not isinstance(obj, socket.socket) or obj is live.sock or obj is client:
            continue
        try:
            if (obj.family == socket.AF_INET and obj.getsockname()[1] == live.port
                    and obj.getpeername() == client.getsockname()):
                return obj
        except OSError:
            continue
    return None


def test_accepted_connections_have_tcp_nodelay() -> None:
    with StubUpstream() as stub:
        live = stub._live
        conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=10)
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        conn.request("POST", "/v1/chat/completions", body=body,
                     headers={"content-type": "application/json"})
        assert conn.getresponse().read()  # keep-alive: the connection stays open
        assert conn.sock is not None
        accepted = accepted_socket(live, conn.sock)
        assert accepted is not None, "found no accepted socket to check"
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        conn.close()
