"""The server's storage: one database (SQLite or PostgreSQL) for the request log, client keys,
the learning loop's outcome store, stored Responses and published router artifacts.

* :mod:`~routecast.storage.schema`: every table, in SQLAlchemy Core;
* :mod:`~routecast.storage.database`: :class:`Database`, an engine from a URL;
* :mod:`~routecast.storage.migrate`: Alembic revisions, applied at start-up;
* :mod:`~routecast.storage.artifacts`: versioned artifacts (routers) that replicas share.
"""

from routecast.storage.database import Database, normalize_url, open_database

__all__ = ["Database", "normalize_url", "open_database"]
