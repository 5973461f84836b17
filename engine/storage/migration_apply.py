"""Carrying out a migration diff: DDL and the data changes it needs.

:func:`execute_diff` runs inside the migration's one transaction
(:func:`engine.storage.migrate.apply_migration`). New tables are created from
the target specs; existing tables are altered through alembic's operations,
as plain ``ALTER TABLE`` where that suffices (always on PostgreSQL) and as a
table rebuild on SQLite for what its ``ALTER TABLE`` cannot express. Stored
values are reshaped before a column's type changes in place (text cut to the
new length, decimals rounded half-up or cleared when they no longer fit), and
a unique index is refused with :class:`~engine.storage.migration_plan.MigrationError`
when existing values repeat.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations

from engine.domain.errors import Where

from . import schema as s
from .migration_plan import Alter, MigrationError, SchemaDiff, TableDiff, storage_family
from .schema import ColumnSpec


def execute_diff(conn: sa.Connection, diff: SchemaDiff) -> None:
    """Carry out ``diff`` inside the caller's transaction: create tables,
    change existing ones, drop the ones the model no longer has."""
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


def _alter_table(conn: sa.Connection, ops: Operations, metadata: sa.MetaData, tdiff: TableDiff) -> None:
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
            ops.create_index(index_name, table, [spec.column], unique=unique, **spec.index_options())
    for index_name, spec, unique in tdiff.index_adds:
        ops.create_index(index_name, table, [spec.column], unique=unique, **spec.index_options())


def _without_fk(column: sa.Column) -> sa.Column:
    return sa.Column(column.name, column.type, nullable=column.nullable, server_default=column.server_default)


def _type_ddl_differs(conn: sa.Connection, old: sa.types.TypeEngine, new: sa.types.TypeEngine) -> bool:
    dialect = conn.dialect
    return old.compile(dialect=dialect) != new.compile(dialect=dialect)


def _fix_values(conn: sa.Connection, table_name: str, alter: Alter) -> None:
    """Reshape stored values before a column's type changes in place."""
    old, new = alter.old, alter.new
    # Typed as an integer: on SQLite the stored minor units are integers, and
    # ``//`` then renders SQLite's integer division. (``/`` is true division
    # in SQLAlchemy 2, rendered as ``x / (d + 0.0)``: a float that turned
    # 1.2549 into 125.99 minor units.)
    column = sa.column(new.column, sa.BigInteger())
    table = sa.table(table_name, column)
    sqlite = conn.dialect.name == "sqlite"
    if storage_family(new) == "text" and new.storage == s.STRING and (old.storage == s.TEXT or (old.length or 0) > new.length):
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
                # Half-up (away from zero) in exact integer arithmetic:
                # SQLite's integer division truncates towards zero, so the
                # sign is taken off first and put back after.
                rounded = sa.case(
                    (column >= 0, (column + half) // divisor),
                    else_=-((-column + half) // divisor),
                )
                conn.execute(table.update().values({new.column: rounded}))
                conn.execute(table.update().where(sa.func.abs(column) >= 10**new.precision).values({new.column: None}))
            else:
                if new_int_digits < old.precision - old.scale:
                    limit = 10 ** (new_int_digits + old.scale)  # < 10**old.precision: fits 64 bits
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
            f"cannot add unique index {index_name}: {spec.object_name}.{spec.field_name} has repeated values ({sample})",
            where=Where(object=spec.object_name, field=spec.field_name),
            hint="make the stored values unique (or the field not unique), then migrate again",
        )
