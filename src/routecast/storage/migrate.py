"""Schema versions, managed by Alembic, run from code: no ``alembic.ini`` for users.

:func:`upgrade` brings a database to the newest revision of :mod:`routecast.storage.migrations`
(the server does it at start-up, and so does every CLI command that opens a database for
writing). It is cheap when there is nothing to do (one query reads the stamped revision), and
safe when several processes start at once: in PostgreSQL a transaction-scoped advisory lock,
in SQLite ``BEGIN IMMEDIATE`` (the database's write lock), makes the others wait, after which
they find the schema current. The whole upgrade runs in one transaction in both databases
(both have transactional DDL), so a failed upgrade leaves the previous schema as it was.

The first revision takes over databases that earlier releases created with their own DDL:
it creates the tables that are missing and adds the columns a file lacks, keeping every row.

For developers: a new revision is a file in ``migrations/versions`` (``down_revision`` the
previous head); :func:`alembic_config` gives the Config the ``alembic`` commands need, e.g.
``python -c "from routecast.storage.migrate import revision; revision('add x')"``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from routecast.storage.database import Database

MIGRATIONS = Path(__file__).with_name("migrations")
#: The advisory lock key that serialises upgrades in one PostgreSQL database.
PG_LOCK_KEY = 0x726F7574656361  # "routeca"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic :class:`Config` over the package's migrations (and ``connection``)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@cache
def head() -> str:
    """The newest revision."""
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert len(heads) == 1, f"migrations must have one head, found {heads}"
    return heads[0]


def current(conn: Connection) -> str | None:
    """The revision a database is stamped with (``None``: never migrated by Alembic)."""
    return MigrationContext.configure(conn).get_current_revision()


def upgrade(db: Database, target: str = "head") -> bool:
    """Bring ``db`` to ``target``; ``False`` when it was there already."""
    engine = db.engine.execution_options(sqlite_immediate=True) if db.is_sqlite else db.engine
    with engine.begin() as conn:
        if not db.is_sqlite:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_LOCK_KEY})
        if current(conn) == (head() if target == "head" else target):
            return False
        command.upgrade(alembic_config(conn), target)
    return True


def revision(message: str) -> None:
    """Write a new, empty revision file (for developers of routecast)."""
    command.revision(alembic_config(), message=message)
