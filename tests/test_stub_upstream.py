"""The tests' own servers: sockets that uvicorn accepts answer without a Nagle stall."""

from __future__ import annotations

import gc
import http.client
import json
import socket

from tests.stub_upstream import LiveServer, StubUpstream


def accepted_sockets(live: LiveServer) -> list[socket.socket]:
    """The server side of the connections ``live`` accepted (found among live objects: uvicorn
    keeps them inside its asyncio transports and exposes none)."""
    found = []
    for obj in gc.get_objects():
        if (isinstance(obj, socket.socket) and obj is not live.sock and obj.fileno() != -1
                and obj.family == socket.AF_INET):
            try:
                if obj.getsockname()[1] == live.port:
                    found.append(obj)
            except OSError:
                continue
    return found


def test_accepted_connections_have_tcp_nodelay() -> None:
    with StubUpstream() as stub:
        live = stub._live
        conn = http.client.HTTPConnection("127.0.0.1", live.port, timeout=10)
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        conn.request("POST", "/v1/chat/completions", body=body,
                     headers={"content-type": "application/json"})
        assert conn.getresponse().read()
        accepted = accepted_sockets(live)
        assert accepted, "found no accepted socket to check"
        for sock in accepted:
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        conn.close()
