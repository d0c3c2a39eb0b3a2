"""Fixtures for tests that need a real PostgreSQL, Redis or HAProxy on this machine.

Each test gets its own: a fresh PostgreSQL database (created from the ``postgres`` maintenance
database, dropped afterwards), a Redis key prefix nobody else uses (its keys deleted
afterwards). Where a service is missing, the test skips and says what to start; under CI
(``CI`` set) it fails instead, because CI must run them.

Import the fixtures into a test module (``from tests.services import pg_url, redis_url``);
``module_pg_url`` and ``module_redis_prefix`` are the same for servers a module starts once.
Override the servers with ``ROUTECAST_TEST_PG`` (a libpq URL of a superuser on the maintenance
database) and ``ROUTECAST_TEST_REDIS``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest

PG_ADMIN_URL = os.environ.get("ROUTECAST_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("ROUTECAST_TEST_REDIS", "redis://127.0.0.1:6379/0")


def missing(what: str, fix: str) -> None:
    """Skip (on a developer's machine) or fail (under CI) a test whose service is absent."""
    message = f"{what} is not available: {fix}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI must run these tests)")
    pytest.skip(message)


def _listening(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1",
                                       parts.port or default_port), timeout=1.0):
            return True
    except OSError:
        return False


@contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A new, empty PostgreSQL database's libpq URL, dropped on leaving (skips or fails, as
    :func:`missing` says, when PostgreSQL is absent)."""
    if not _listening(PG_ADMIN_URL, 5432):
        missing(f"PostgreSQL at {PG_ADMIN_URL}", "start it, or set ROUTECAST_TEST_PG")
    import psycopg

    name = f"routecast_test_{secrets.token_hex(6)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(PG_ADMIN_URL)
    try:
        yield parts._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A libpq URL (``postgresql://...``) of a new, empty database, dropped after the test."""
    with fresh_pg_database() as url:
        yield url


@pytest.fixture(scope="module")
def module_pg_url() -> Iterator[str]:
    """:func:`pg_url` for a whole module (servers started once per module share it)."""
    with fresh_pg_database() as url:
        yield url


@contextmanager
def private_redis_prefix() -> Iterator[str]:
    """A Redis key prefix nobody else uses (``routecast-test-<hex>:``); its keys are deleted on
    leaving. The server is :data:`REDIS_URL`."""
    if not _listening(REDIS_URL, 6379):
        missing(f"Redis at {REDIS_URL}", "start it, or set ROUTECAST_TEST_REDIS")
    import redis

    prefix = f"routecast-test-{secrets.token_hex(6)}:"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        try:
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A Redis key prefix of this test's own; its keys are deleted after the test. The server
    is :data:`REDIS_URL` (see :func:`redis_url`)."""
    with private_redis_prefix() as prefix:
        yield prefix


@pytest.fixture(scope="module")
def module_redis_prefix() -> Iterator[str]:
    """:func:`redis_prefix` for a whole module; the server is :data:`REDIS_URL`."""
    with private_redis_prefix() as prefix:
        yield prefix


@pytest.fixture
def redis_url(redis_prefix: str) -> str:
    """The test Redis server's URL (use with :func:`redis_prefix` as ``state.key_prefix``)."""
    return REDIS_URL


@pytest.fixture(scope="session")
def haproxy_bin() -> str:
    """The ``haproxy`` executable (Debian's package; ``.ci/run`` installs it)."""
    path = shutil.which("haproxy") or ("/usr/sbin/haproxy"
                                       if os.path.exists("/usr/sbin/haproxy") else None)
    if path is None:
        missing("HAProxy", "apt-get install haproxy")
    assert path is not None
    return path
