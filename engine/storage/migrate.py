"""Bringing the database schema in line with the metadata model.

:func:`plan_migration` compares the model with what the database holds and
returns the changes as data; :func:`apply_migration` carries them out.

What the database holds is read from the ``_mb_schema_field`` snapshot, which
records the exact column definitions of the last applied model, so a change
of scale or a Picklist that became Text is known precisely. Reflection covers
what the snapshot cannot know: tables and columns created some other way (or
before the snapshot existed) are adopted when their type fits, and a snapshot
entry whose column is gone is re-created. Indexes are always compared by
reflection.

Only tables the snapshot records are ever dropped: a table that the model
does not know and that metabill did not create is left alone.

Applying happens in **one transaction**; PostgreSQL and SQLite both have
transactional DDL, so a failure leaves the schema and every row as they were.
Destructive changes (see :attr:`Change.data_loss`) are refused unless
explicitly allowed, before anything is touched.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterator, Mapping, Sequence

import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations

from engine.config.model import FieldType, OrgModel

from . import schema as s
from .guards import install_guards, remove_guards
from .db import raw_dbapi, transaction
from .schema import ColumnSpec

CREATE_TABLE = "create_table"
ADD_COLUMN = "add_column"
DROP_COLUMN = "drop_column"
DROP_TABLE = "drop_table"
CHANGE_TYPE = "change_type"
ADD_INDEX = "add_index"
DROP_INDEX = "drop_index"

#: Bumped when the layout of the internal tables changes.
STORAGE_FORMAT = "1"

# Any constant: serialises concurrent migrations on one PostgreSQL database.
_PG_LOCK_KEY = 0x6D62_6D69_6772


@dataclass(frozen=True, slots=True)
class Change:
    """One step of a migration.

    ``data_loss``: applying it can destroy stored values (dropped tables or
    columns, shorter text, fewer decimals or integer digits, a type family
    change). ``safe``: it cannot lose data *and* cannot fail on existing data
    (a unique index is not safe: duplicates make it fail).
    """

    kind: str
    object_name: str
    field_name: str | None
    message: str
    data_loss: bool
    safe: bool

    def render(self) -> str:
        marker = "!" if self.data_loss else ("+" if self.safe else "~")
        return f"{marker} {self.kind:<12} {self.message}"


@dataclass(frozen=True, slots=True)
class MigrationPlan:
    """The changes between the model and the database, in the order they are
    applied. Behaves as a sequence of :class:`Change`; empty means in sync."""

    changes: tuple[Change, ...] = ()

    def __iter__(self) -> Iterator[Change]:
        return iter(self.changes)

    def __len__(self) -> int:
        return len(self.changes)

    def __getitem__(self, index: int) -> Change:
        return self.changes[index]

    def __bool__(self) -> bool:
        return bool(self.changes)

    @property
    def destructive(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.data_loss)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(c.kind for c in self.changes)

    def render(self) -> str:
        if not self.changes:
            return "The database schema matches the model."
        return "\n".join(c.render() for c in self.changes)


class MigrationError(RuntimeError):
    """A migration could not be applied; nothing was changed."""


class DataLossRefused(MigrationError):
    """The plan has destructive changes and they were not allowed."""

    def __init__(self, plan: MigrationPlan):
        self.plan = plan
        lines = [c.message for c in plan.destructive]
        super().__init__(
            f"{len(lines)} change{'s' if len(lines) != 1 else ''} would lose data; "
            "nothing was applied (allow data loss to apply them):\n  " + "\n  ".join(lines)
        )


# ---------------------------------------------------------------------------
# Describing and classifying column changes


def describe(spec: ColumnSpec) -> str:
    """The type of a column as the user wrote it, e.g. ``Currency(16,2)``."""
    kind = spec.field_type
    if spec.storage == s.STRING and kind != FieldType.AUTONUMBER.value:
        return f"{kind}({spec.length})"
    if spec.storage == s.DECIMAL:
        return f"{kind}({spec.precision},{spec.scale})"
    if spec.storage == s.REFERENCE and spec.reference_to:
        return f"{kind}({spec.reference_to})"
    return kind


def _family(spec: ColumnSpec) -> str:
    if spec.storage in (s.STRING, s.TEXT):
        return "text"
    if spec.storage in (s.REFERENCE, s.KEY, "integer"):
        return "integer"
    return spec.storage


@dataclass(frozen=True, slots=True)
class _Alter:
    old: ColumnSpec
    new: ColumnSpec
    ddl: bool  # the column type or its foreign key changes
    replace: bool  # drop and re-add: the values cannot be converted
    data_loss: bool
    message: str


def _classify(old: ColumnSpec, new: ColumnSpec) -> _Alter | None:
    """How to get from ``old`` to ``new``; None when nothing differs."""
    where = f"{new.table}.{new.column} ({new.object_name}.{new.field_name})"
    change = f"{describe(old)} -> {describe(new)}"
    family = _family(new)
    if _family(old) != family or (old.storage == s.MULTI) != (new.storage == s.MULTI):
        return _Alter(old, new, True, True, True, f"change type of {where}: {change}; existing values are discarded")
    if family == "text":
        old_len = None if old.storage == s.TEXT else old.length
        new_len = None if new.storage == s.TEXT else new.length
        if old_len == new_len:
            pass
        elif new_len is None or (old_len is not None and new_len > old_len):
            return _Alter(old, new, True, False, False, f"widen {where}: {change}")
        else:
            return _Alter(
                old, new, True, False, True, f"shorten {where}: {change}; longer values are cut to {new_len} characters"
            )
    elif family == s.DECIMAL:
        if (old.precision, old.scale) != (new.precision, new.scale):
            old_int = old.precision - old.scale
            new_int = new.precision - new.scale
            losses = []
            if new.scale < old.scale:
                losses.append(f"values are rounded to {new.scale} decimals")
            if new_int < old_int:
                losses.append(f"values with more than {new_int} integer digits are cleared")
            verb = "rescale" if new.scale != old.scale else ("widen" if new_int > old_int else "narrow")
            text = f"{verb} {where}: {change}" + (f"; {', '.join(losses)}" if losses else "")
            return _Alter(old, new, True, False, bool(losses), text)
    elif family == "integer":
        if old.reference_to != new.reference_to and old.reference_to and new.reference_to:
            return _Alter(
                old, new, True, True, True, f"change type of {where}: {change}; existing references are discarded"
            )
        if (old.reference_to, old.on_delete) != (new.reference_to, new.on_delete):
            return _Alter(old, new, True, False, False, f"change the foreign key of {where}: {change}")
    if old.field_type != new.field_type:
        return _Alter(old, new, False, False, False, f"change type of {where}: {change} (same storage)")
    return None


# ---------------------------------------------------------------------------
# Reading what the database holds


@dataclass
class _TableDiff:
    table: str
    object_name: str
    adds: list[ColumnSpec] = field(default_factory=list)
    drops: list[ColumnSpec] = field(default_factory=list)
    alters: list[_Alter] = field(default_factory=list)
    index_drops: list[tuple[str, str]] = field(default_factory=list)  # (index, column)
    index_adds: list[tuple[str, ColumnSpec, bool]] = field(default_factory=list)  # (index, spec, unique)

    @property
    def empty(self) -> bool:
        return not (self.adds or self.drops or self.alters or self.index_drops or self.index_adds)


@dataclass
class _Diff:
    target: dict[str, tuple[ColumnSpec, ...]]
    creates: list[str] = field(default_factory=list)
    tables: list[_TableDiff] = field(default_factory=list)
    drop_tables: list[tuple[str, str, int]] = field(default_factory=list)  # (table, object, rows)
    plan: MigrationPlan = MigrationPlan()


def _reflected_family(column_type: sa.types.TypeEngine) -> tuple[str, dict]:
    """Storage family and shape of a reflected column type."""
    if isinstance(column_type, sa.Boolean):
        return s.BOOLEAN, {}
    if isinstance(column_type, sa.Integer):
        return "integer", {}
    if isinstance(column_type, sa.Numeric) and not isinstance(column_type, sa.Float):
        return s.DECIMAL, {"precision": column_type.precision, "scale": column_type.scale}
    if isinstance(column_type, sa.DateTime):
        return s.DATETIME, {}
    if isinstance(column_type, sa.Date):
        return s.DATE, {}
    if isinstance(column_type, sa.Text) or (isinstance(column_type, sa.String) and not column_type.length):
        return s.TEXT, {}
    if isinstance(column_type, sa.String):
        return s.STRING, {"length": column_type.length}
    return "other", {}


def _adopt(table: str, info: Mapping, wanted: ColumnSpec | None, dialect: str, object_name: str) -> ColumnSpec:
    """A spec for a column found by reflection without a snapshot entry: the
    model's spec when the column fits it, else a description of what is there."""
    family, shape = _reflected_family(info["type"])
    if wanted is not None:
        if wanted.storage == s.DECIMAL and dialect == "sqlite" and family == "integer":
            return wanted  # minor units in an INTEGER column; the scale is assumed
        if wanted.storage == s.DECIMAL and family == s.DECIMAL and shape.get("precision") is not None:
            return _replace(wanted, precision=shape["precision"], scale=shape["scale"] or 0)
        if wanted.storage == s.STRING and family in (s.STRING, s.TEXT):
            if family == s.TEXT:
                return _replace(wanted, storage=s.TEXT, length=None)
            return _replace(wanted, length=shape["length"])
        if wanted.storage in (s.TEXT, s.MULTI) and family in (s.STRING, s.TEXT):
            if family == s.STRING:
                return _replace(wanted, storage=s.STRING, length=shape["length"], field_type=FieldType.TEXT.value)
            return wanted
        if wanted.storage in (s.REFERENCE, s.KEY) and family == "integer":
            return wanted
        if wanted.storage == family:
            return wanted
    storage = {"integer": s.REFERENCE, "other": s.TEXT}.get(family, family)
    return ColumnSpec(
        table=table,
        column=info["name"],
        object_name=object_name,
        field_name=info["name"],
        field_type=f"existing {str(info['type']).upper()}",
        storage=storage,
        length=shape.get("length"),
        precision=shape.get("precision"),
        scale=shape.get("scale"),
    )


def _replace(spec: ColumnSpec, **changes) -> ColumnSpec:
    data = {name: getattr(spec, name) for name in ColumnSpec.__dataclass_fields__}
    data.update(changes)
    return ColumnSpec(**data)


def _read_snapshot(conn: sa.Connection, existing: set[str]) -> dict[str, dict[str, ColumnSpec]]:
    snapshot: dict[str, dict[str, ColumnSpec]] = defaultdict(dict)
    if s.SCHEMA_FIELD.name not in existing:
        return snapshot
    for row in conn.execute(sa.select(s.SCHEMA_FIELD.c.definition)):
        spec = ColumnSpec.from_json(row.definition)
        snapshot[spec.table][spec.column] = spec
    return snapshot


def _is_our_index(name: str | None) -> bool:
    return bool(name) and (name.startswith("ix_") or name.startswith("uq_"))


def _count_rows(conn: sa.Connection, table: str) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(sa.table(table))).scalar_one()


def _compute_diff(conn: sa.Connection, model: OrgModel) -> _Diff:
    dialect = conn.dialect.name
    target = s.model_specs(model)
    inspector = sa.inspect(conn)
    all_tables = set(inspector.get_table_names())
    existing = {t for t in all_tables if not t.startswith(s.INTERNAL_PREFIX) and not t.startswith("_alembic_tmp_")}
    snapshot = _read_snapshot(conn, all_tables)
    diff = _Diff(target=target)
    changes: list[Change] = []

    for table, specs in target.items():
        object_name = specs[0].object_name
        if table not in existing:
            diff.creates.append(table)
            changes.append(
                Change(CREATE_TABLE, object_name, None, f"create table {table} for {object_name}", False, True)
            )
            continue
        known = snapshot.get(table, {})
        wanted = {spec.column: spec for spec in specs}
        reflected = {info["name"]: info for info in inspector.get_columns(table)}
        current: dict[str, ColumnSpec] = {}
        for name, info in reflected.items():
            current[name] = known.get(name) or _adopt(table, info, wanted.get(name), dialect, object_name)
        tdiff = _TableDiff(table, object_name)

        for spec in specs:
            old = current.get(spec.column)
            if old is None:
                tdiff.adds.append(spec)
                changes.append(
                    Change(
                        ADD_COLUMN,
                        object_name,
                        spec.field_name,
                        f"add column {table}.{spec.column} for {object_name}.{spec.field_name} ({describe(spec)})",
                        False,
                        True,
                    )
                )
                continue
            alter = _classify(old, spec)
            if alter is not None:
                tdiff.alters.append(alter)
                changes.append(
                    Change(CHANGE_TYPE, object_name, spec.field_name, alter.message, alter.data_loss, not alter.data_loss)
                )
        for name, old in current.items():
            if name not in wanted:
                tdiff.drops.append(old)
                changes.append(
                    Change(
                        DROP_COLUMN,
                        object_name,
                        old.field_name,
                        f"drop column {table}.{name} ({old.object_name}.{old.field_name}, {describe(old)}); "
                        "its values are lost",
                        True,
                        False,
                    )
                )

        # Indexes, by reflection. Columns that are dropped or re-created take
        # their indexes with them; new columns get theirs with the column.
        rebuilt = {a.new.column for a in tdiff.alters if a.replace}
        gone = {d.column for d in tdiff.drops} | rebuilt
        fresh = {a.column for a in tdiff.adds} | rebuilt
        have = {ix["name"]: ix for ix in inspector.get_indexes(table) if _is_our_index(ix["name"])}
        desired: dict[str, tuple[ColumnSpec, bool]] = {}
        for spec in specs:
            for index_name, unique in spec.indexes:
                desired[index_name] = (spec, unique)
        for index_name, info in have.items():
            columns = [c for c in info.get("column_names") or [] if c]
            if columns and all(c in gone for c in columns):
                continue
            wanted_index = desired.get(index_name)
            if wanted_index is None or bool(info.get("unique")) != wanted_index[1] or columns != [wanted_index[0].column]:
                tdiff.index_drops.append((index_name, columns[0] if columns else ""))
                field_name = current[columns[0]].field_name if columns and columns[0] in current else None
                changes.append(
                    Change(DROP_INDEX, object_name, field_name, f"drop index {index_name} on {table}", False, True)
                )
        dropped_now = {name for name, _ in tdiff.index_drops}
        for index_name, (spec, unique) in desired.items():
            if spec.column in fresh:
                continue
            if index_name in have and index_name not in dropped_now:
                continue
            tdiff.index_adds.append((index_name, spec, unique))
            what = "unique index" if unique else "index"
            changes.append(
                Change(
                    ADD_INDEX,
                    object_name,
                    spec.field_name,
                    f"add {what} {index_name} on {table}.{spec.column}"
                    + ("; fails if existing values repeat" if unique else ""),
                    False,
                    not unique,
                )
            )
        if not tdiff.empty:
            diff.tables.append(tdiff)

    for table in sorted(set(snapshot) - set(target)):
        if table not in existing:
            continue
        object_name = next(iter(snapshot[table].values())).object_name
        rows = _count_rows(conn, table)
        diff.drop_tables.append((table, object_name, rows))
        changes.append(
            Change(
                DROP_TABLE,
                object_name,
                None,
                f"drop table {table} ({object_name}) with {rows} row{'s' if rows != 1 else ''}",
                True,
                False,
            )
        )
    diff.plan = MigrationPlan(tuple(changes))
    return diff


# ---------------------------------------------------------------------------
# Public API


def plan_migration(engine: sa.Engine, model: OrgModel) -> MigrationPlan:
    """The changes that would bring the database in line with ``model``."""
    with transaction(engine, readonly=True) as conn:
        return _compute_diff(conn, model).plan


def apply_migration(engine: sa.Engine, model: OrgModel, *, allow_data_loss: bool = False) -> MigrationPlan:
    """Apply every change of the plan in one transaction and record the new
    snapshot; return the plan that was applied (empty when nothing changed).

    Raises :class:`DataLossRefused` (before changing anything) when the plan
    has destructive changes and ``allow_data_loss`` is false, and
    :class:`MigrationError` when existing data prevents a change.
    """
    with _migration_connection(engine) as conn:
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_LOCK_KEY)))
            diff = _compute_diff(conn, model)
            if diff.plan.destructive and not allow_data_loss:
                raise DataLossRefused(diff.plan)
            s.INTERNAL.create_all(conn, checkfirst=True)
            remove_guards(conn)
            _execute(conn, diff)
            snapshot_changed = _write_snapshot(conn, diff.target)
            _write_meta(conn, model, bump=bool(diff.plan) or snapshot_changed)
            install_guards(conn, model)
            if conn.dialect.name == "sqlite":
                _check_foreign_keys(conn)
    return diff.plan


@contextmanager
def _migration_connection(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection for DDL. On SQLite, foreign keys are switched off for the
    duration: rebuilding a parent table (DROP + rename) would otherwise fire
    ON DELETE CASCADE/SET NULL on its children. The pragma only works outside
    a transaction, hence it is set on the raw connection before BEGIN;
    integrity is checked with ``PRAGMA foreign_key_check`` before COMMIT."""
    with engine.connect() as conn:
        if conn.dialect.name != "sqlite":
            yield conn
            return
        raw = raw_dbapi(conn)
        raw.execute("PRAGMA foreign_keys=OFF")
        try:
            yield conn
        finally:
            raw.execute("PRAGMA foreign_keys=ON")


def _check_foreign_keys(conn: sa.Connection) -> None:
    problems = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if problems:
        sample = ", ".join(f"{p[0]} row {p[1]} -> {p[2]}" for p in problems[:5])
        raise MigrationError(f"the migration would leave {len(problems)} dangling references ({sample})")


# ---------------------------------------------------------------------------
# Carrying out a diff


def _execute(conn: sa.Connection, diff: _Diff) -> None:
    metadata = s.metadata_from_specs(diff.target)
    if diff.creates:
        metadata.create_all(conn, tables=[metadata.tables[name] for name in diff.creates], checkfirst=False)
    context = MigrationContext.configure(connection=conn, opts={"target_metadata": metadata})
    ops = Operations(context)
    for tdiff in diff.tables:
        _alter_table(conn, ops, metadata, tdiff)
    if diff.drop_tables:
        _drop_tables(conn, ops, [name for name, _, _ in diff.drop_tables])


def _drop_tables(conn: sa.Connection, ops: Operations, names: list[str]) -> None:
    """Drop tables, children before parents (PostgreSQL refuses to drop a
    table another one still references)."""
    inspector = sa.inspect(conn)
    doomed = set(names)
    foreign_keys = {name: inspector.get_foreign_keys(name) for name in names}
    parents = {name: {fk["referred_table"] for fk in fks} & doomed - {name} for name, fks in foreign_keys.items()}
    remaining = sorted(doomed)
    while remaining:
        referenced = set().union(*(parents[name] for name in remaining))
        ready = [name for name in remaining if name not in referenced]
        if not ready:
            # A reference cycle: cut the references between these tables first.
            if conn.dialect.name != "sqlite":
                for name in remaining:
                    for fk in foreign_keys[name]:
                        if fk["referred_table"] in doomed and fk.get("name"):
                            ops.drop_constraint(fk["name"], name, type_="foreignkey")
            ready = remaining
        for name in ready:
            ops.drop_table(name)
        remaining = [name for name in remaining if name not in ready]


def _alter_table(conn: sa.Connection, ops: Operations, metadata: sa.MetaData, tdiff: _TableDiff) -> None:
    sqlite = conn.dialect.name == "sqlite"
    table = tdiff.table
    for alter in tdiff.alters:
        if alter.ddl and not alter.replace:
            _fix_values(conn, table, alter)
    for index_name, spec, unique in tdiff.index_adds:
        if unique:
            _refuse_duplicates(conn, table, spec, index_name)

    batch_ops: list[tuple] = []
    inspector = sa.inspect(conn)
    existing_indexes = {ix["name"]: ix for ix in inspector.get_indexes(table)}
    replaced = [a for a in tdiff.alters if a.replace]
    doomed_columns = {d.column for d in tdiff.drops} | {a.old.column for a in replaced}
    for index_name, _ in tdiff.index_drops:
        batch_ops.append(("drop_index", index_name))
    for name, info in existing_indexes.items():
        # Indexes of columns about to disappear go first: a SQLite table
        # rebuild would otherwise try to re-create them.
        if name and set(info.get("column_names") or []) & doomed_columns and name not in dict(tdiff.index_drops):
            batch_ops.append(("drop_index", name))
    for alter in tdiff.alters:
        if alter.ddl and not alter.replace and alter.old.reference_to and (
            (alter.old.reference_to, alter.old.on_delete) != (alter.new.reference_to, alter.new.on_delete)
        ):
            batch_ops.append(("drop_fk", alter.old.fk_name))
    for column in sorted(doomed_columns):
        batch_ops.append(("drop_column", column))
    for spec in [*tdiff.adds, *(a.new for a in replaced)]:
        batch_ops.append(("add_column", spec))
    for alter in tdiff.alters:
        if not alter.ddl or alter.replace:
            continue
        old_type, new_type = s.sql_type(alter.old), s.sql_type(alter.new)
        if _type_ddl_differs(conn, old_type, new_type):
            batch_ops.append(("alter_type", alter.new.column, old_type, new_type))
        new = alter.new
        if new.reference_to and (alter.old.reference_to, alter.old.on_delete) != (new.reference_to, new.on_delete):
            batch_ops.append(("create_fk", new))

    if batch_ops:
        # Plain ALTERs where they suffice (always on PostgreSQL); a SQLite
        # table rebuild for anything SQLite's ALTER TABLE cannot express.
        needs_rebuild = sqlite and any(
            op[0] != "add_column" or op[1].storage == s.REFERENCE or op[1].storage == s.BOOLEAN for op in batch_ops
        )
        with ops.batch_alter_table(table, recreate="always" if needs_rebuild else "auto") as batch:
            for op in batch_ops:
                kind = op[0]
                if kind == "drop_index":
                    batch.drop_index(op[1])
                elif kind == "drop_fk":
                    batch.drop_constraint(op[1], type_="foreignkey")
                elif kind == "drop_column":
                    batch.drop_column(op[1])
                elif kind == "add_column":
                    column = s.make_column(op[1])
                    if not sqlite or not needs_rebuild:
                        column = _without_fk(column)
                    batch.add_column(column)
                    if op[1].reference_to and (not sqlite or not needs_rebuild):
                        # Batch adds on SQLite carry the FK inside the column;
                        # elsewhere the constraint is a separate ALTER.
                        batch.create_foreign_key(
                            op[1].fk_name, op[1].reference_to, [op[1].column], [s.ID], ondelete=op[1].on_delete
                        )
                elif kind == "alter_type":
                    batch.alter_column(op[1], type_=op[3], existing_type=op[2], existing_nullable=True)
                elif kind == "create_fk":
                    spec = op[1]
                    batch.create_foreign_key(spec.fk_name, spec.reference_to, [spec.column], [s.ID], ondelete=spec.on_delete)

    for spec in [*tdiff.adds, *(a.new for a in replaced)]:
        for index_name, unique in spec.indexes:
            ops.create_index(index_name, table, [spec.column], unique=unique)
    for index_name, spec, unique in tdiff.index_adds:
        ops.create_index(index_name, table, [spec.column], unique=unique)


def _without_fk(column: sa.Column) -> sa.Column:
    return sa.Column(column.name, column.type, nullable=column.nullable, server_default=column.server_default)


def _type_ddl_differs(conn: sa.Connection, old: sa.types.TypeEngine, new: sa.types.TypeEngine) -> bool:
    dialect = conn.dialect
    return old.compile(dialect=dialect) != new.compile(dialect=dialect)


def _fix_values(conn: sa.Connection, table_name: str, alter: _Alter) -> None:
    """Reshape stored values before a column's type changes in place."""
    old, new = alter.old, alter.new
    column = sa.column(new.column)
    table = sa.table(table_name, column)
    sqlite = conn.dialect.name == "sqlite"
    if _family(new) == "text" and new.storage == s.STRING and (old.storage == s.TEXT or (old.length or 0) > new.length):
        conn.execute(
            table.update()
            .where(sa.func.length(column) > new.length)
            .values({new.column: sa.func.substr(column, 1, new.length)})
        )
    elif new.storage == s.DECIMAL and (old.precision, old.scale) != (new.precision, new.scale):
        new_int_digits = new.precision - new.scale
        if sqlite:
            # Minor units: the scale lives in the integers themselves.
            if new.scale < old.scale:
                divisor = 10 ** (old.scale - new.scale)
                half = divisor // 2
                rounded = sa.case(
                    (column >= 0, (column + half) / divisor),
                    else_=-((-column + half) / divisor),
                )
                conn.execute(table.update().values({new.column: rounded}))
                conn.execute(table.update().where(sa.func.abs(column) >= 10**new.precision).values({new.column: None}))
            else:
                limit = 10 ** (new_int_digits + old.scale)
                conn.execute(table.update().where(sa.func.abs(column) >= limit).values({new.column: None}))
                if new.scale > old.scale:
                    factor = 10 ** (new.scale - old.scale)
                    conn.execute(table.update().values({new.column: column * factor}))
        elif new_int_digits < old.precision - old.scale or new.scale < old.scale:
            # PostgreSQL rounds on the type change itself; values that would
            # overflow the new precision are cleared first.
            conn.execute(
                table.update()
                .where(sa.func.abs(sa.func.round(column, new.scale)) >= 10**new_int_digits)
                .values({new.column: None})
            )


def _refuse_duplicates(conn: sa.Connection, table_name: str, spec: ColumnSpec, index_name: str) -> None:
    column = sa.column(spec.column)
    table = sa.table(table_name, column)
    repeated = conn.execute(
        sa.select(column)
        .select_from(table)
        .where(column.is_not(None))
        .group_by(column)
        .having(sa.func.count() > 1)
        .limit(5)
    ).scalars().all()
    if repeated:
        sample = ", ".join(repr(v) for v in repeated)
        raise MigrationError(
            f"cannot add unique index {index_name}: {spec.object_name}.{spec.field_name} has repeated values ({sample})"
        )


def _write_snapshot(conn: sa.Connection, target: Mapping[str, Sequence[ColumnSpec]]) -> bool:
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


def _write_meta(conn: sa.Connection, model: OrgModel, *, bump: bool) -> None:
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
