"""Storage: SQLAlchemy 2 tables, Alembic migrations and repositories. SQLite by default, PostgreSQL by URL.

>>> from assay.storage import Store
>>> store = Store.open("sqlite:///.assay/assay.db")  # doctest: +SKIP
>>> store.links(operation_id)  # doctest: +SKIP
"""

from assay.storage._c2 import C2Records
from assay.storage._database import Database, normalize_url, sqlite_url
from assay.storage._private import private_dir, private_file
from assay.storage._rounds import RoundRecord
from assay.storage._store import OperationRecord, Store

__all__ = [
    "C2Records",
    "Database",
    "OperationRecord",
    "RoundRecord",
    "Store",
    "normalize_url",
    "private_dir",
    "private_file",
    "sqlite_url",
]
