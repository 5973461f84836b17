"""What the database records about its own schema.

``_mb_schema_field`` holds the exact definition (:class:`~engine.storage.schema.ColumnSpec`)
of every column of the last applied model: the migration plan compares the
model with it (:mod:`.migration_plan`) and a migration rewrites it.
``_mb_meta`` holds facts about the database: ``schema_version`` (bumped by
every migration that changed something), ``migrated_at``, the
``config_hash`` of the model last applied and the ``storage_format`` of the
internal tables.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timezone
from typing import Mapping, Sequence

import sqlalchemy as sa

from engine.config.model import OrgModel

from . import schema as s
from .schema import ColumnSpec

#: Bumped when the layout of the internal tables changes.
STORAGE_FORMAT = "1"


def read_snapshot(conn: sa.Connection, existing: set[str]) -> dict[str, dict[str, ColumnSpec]]:
    """The recorded column specs, by table and column (empty before the
    first migration; ``existing`` are the database's table names)."""
    snapshot: dict[str, dict[str, ColumnSpec]] = defaultdict(dict)
    if s.SCHEMA_FIELD.name not in existing:
        return snapshot
    for row in conn.execute(sa.select(s.SCHEMA_FIELD.c.definition)):
        spec = ColumnSpec.from_json(row.definition)
        snapshot[spec.table][spec.column] = spec
    return snapshot


def write_snapshot(conn: sa.Connection, target: Mapping[str, Sequence[ColumnSpec]]) -> bool:
    """Make ``_mb_schema_field`` equal the target; True when it changed."""
    wanted = {(spec.table, spec.column): spec.to_json() for specs in target.values() for spec in specs}
    stored = {
        (row.table_name, row.column_name): row.definition
        for row in conn.execute(sa.select(s.SCHEMA_FIELD.c.table_name, s.SCHEMA_FIELD.c.column_name, s.SCHEMA_FIELD.c.definition))
    }
    if stored == wanted:
        return False
    conn.execute(s.SCHEMA_FIELD.delete())
    rows = []
    for specs in target.values():
        for spec in specs:
            rows.append(
                {
                    "table_name": spec.table,
                    "column_name": spec.column,
                    "object_name": spec.object_name,
                    "field_name": spec.field_name,
                    "definition": spec.to_json(),
                }
            )
    if rows:
        conn.execute(s.SCHEMA_FIELD.insert(), rows)
    return True


def read_meta(conn: sa.Connection) -> dict[str, str]:
    """The ``_mb_meta`` facts (empty before the first migration)."""
    if not sa.inspect(conn).has_table(s.META.name):
        return {}
    return {row.key: row.value for row in conn.execute(sa.select(s.META.c.key, s.META.c.value))}


def write_meta(conn: sa.Connection, model: OrgModel, *, bump: bool) -> None:
    """Record a migration in ``_mb_meta``: a new schema version (and its
    time) when ``bump`` or on the first migration, the model's config hash
    and the storage format."""
    current = read_meta(conn)
    updates: dict[str, str] = {}
    if bump or "schema_version" not in current:
        updates["schema_version"] = str(int(current.get("schema_version", "0")) + 1)
        updates["migrated_at"] = datetime.now(timezone.utc).isoformat()
    if current.get("config_hash") != model.config_hash:
        updates["config_hash"] = model.config_hash
    if current.get("storage_format") != STORAGE_FORMAT:
        updates["storage_format"] = STORAGE_FORMAT
    for key, value in updates.items():
        if key in current:
            conn.execute(s.META.update().where(s.META.c.key == key).values(value=value))
        else:
            conn.execute(s.META.insert().values(key=key, value=value))
