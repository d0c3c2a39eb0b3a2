"""A small HTTP client for tests, on the standard library: no redirect following, so tests
see the status a browser would; an optional cookie jar, for a session like a browser's."""

from __future__ import annotations

import http.client
import urllib.parse
from dataclasses import dataclass, field


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> object:
        import json

        return json.loads(self.body)


@dataclass
class Http:
    """Requests to one ``http://host:port`` base; keeps cookies the server sets."""

    base: str
    cookies: dict[str, str] = field(default_factory=dict)

    def request(self, method: str, path: str, *, form: dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> Reply:
        url = urllib.parse.urlsplit(self.base)
        con = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
        sent = dict(headers or {})
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            sent["content-type"] = "application/x-www-form-urlencoded"
        if self.cookies:
            sent["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        try:
            con.request(method, path, body=body, headers=sent)
            response = con.getresponse()
            data = response.read()
            for value in response.headers.get_all("set-cookie") or []:
                name, _, rest = value.partition("=")
                cookie = rest.split(";", 1)[0].strip().strip('"')
                if cookie:
                    self.cookies[name.strip()] = cookie
                else:
                    self.cookies.pop(name.strip(), None)
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()},
                         data)
        finally:
            con.close()

    def get(self, path: str, **kw: dict[str, str] | None) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: dict[str, str] | None) -> Reply:
        return self.request("POST", path, **kw)
