"""Comparing the metadata model with the database: the migration plan.

:func:`compute_diff` reads what the database holds and returns, per table,
what must change (:class:`SchemaDiff`) together with the same changes as data
for people (:class:`MigrationPlan` of :class:`Change`). Nothing here writes;
:mod:`.migration_apply` carries a diff out and :mod:`.migrate` is the public
entry point.

What the database holds is read from the ``_mb_schema_field`` snapshot
(:mod:`.snapshot`), which records the exact column definitions of the last
applied model, so a change of scale or a Picklist that became Text is known
precisely. Reflection covers what the snapshot cannot know: tables and
columns created some other way (or before the snapshot existed) are adopted
when their type fits, and a snapshot entry whose column is gone is re-created.
Indexes are always compared by reflection.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterator, Mapping

import sqlalchemy as sa

from engine.config.model import FieldType, OrgModel
from engine.domain.errors import EngineError, Problem, Where

from . import schema as s
from .guards import Protected, protected
from .schema import ColumnSpec
from .snapshot import read_snapshot

# The kinds of change (Change.kind).
CREATE_TABLE = "create_table"
ADD_COLUMN = "add_column"
DROP_COLUMN = "drop_column"
DROP_TABLE = "drop_table"
CHANGE_TYPE = "change_type"
ADD_INDEX = "add_index"
DROP_INDEX = "drop_index"


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
    #: Why the change is refused whatever is allowed: it would rewrite
    #: records the immutability guards protect (finalized invoices, their
    #: lines, booking details); None when it is not.
    refused: str | None = None

    def render(self) -> str:
        marker = "x" if self.refused else ("!" if self.data_loss else ("+" if self.safe else "~"))
        return f"{marker} {self.kind:<12} {self.message}"


@dataclass(frozen=True, slots=True)
class MigrationPlan:
    """The changes between the model and the database, in the order they are
    applied. Behaves as a sequence of :class:`Change`; empty means in sync."""

    changes: tuple[Change, ...] = ()
    #: Where the backup written before the destructive changes is (a file or
    #: ``schema mb_backup_...``); set on the plan ``apply_migration`` returns.
    backup: str | None = field(default=None, compare=False)

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
    def refused(self) -> tuple[Change, ...]:
        """Changes no flag allows: they would rewrite finalized records."""
        return tuple(c for c in self.changes if c.refused)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(c.kind for c in self.changes)

    def render(self) -> str:
        if not self.changes:
            return "The database schema matches the model."
        return "\n".join(c.render() for c in self.changes)


class MigrationError(EngineError, RuntimeError):
    """A schema migration could not be applied (existing data prevents a
    change); nothing was changed."""

    code = "R110"


class FinalizedRecordsProtected(MigrationError):
    """The migration would change finalized invoices, their lines or booking
    details, which are immutable; nothing was changed, whatever was allowed.

    Each refused change is one of its problems, naming the records affected."""

    code = "R112"

    def __init__(self, plan: MigrationPlan):
        self.plan = plan
        refused = plan.refused
        super().__init__(
            f"{len(refused)} change{'s' if len(refused) != 1 else ''} would rewrite finalized records, which are "
            "immutable; nothing was applied:\n  " + "\n  ".join(c.refused or "" for c in refused),
            problems=[Problem(self.code, c.refused or c.message, Where(object=c.object_name, field=c.field_name))
                      for c in refused],
            hint="keep the field wide enough for the finalized records (or keep the field); "
                 "corrections of finalized invoices are cancellations",
        )


class DataLossRefused(MigrationError):
    """The migration has changes that would lose data and losing data was not
    allowed; nothing was changed.

    Each destructive change is one of its problems.
    """

    code = "R111"

    def __init__(self, plan: MigrationPlan):
        self.plan = plan
        lines = [c.message for c in plan.destructive]
        super().__init__(
            f"{len(lines)} change{'s' if len(lines) != 1 else ''} would lose data; "
            "nothing was applied (allow data loss to apply them):\n  " + "\n  ".join(lines),
            problems=[Problem(self.code, c.message, Where(object=c.object_name, field=c.field_name))
                      for c in plan.destructive],
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


def storage_family(spec: ColumnSpec) -> str:
    """What a column physically is, for deciding whether values convert:
    ``text``, ``integer`` (ids and references) or the storage kind."""
    if spec.storage in (s.STRING, s.TEXT):
        return "text"
    if spec.storage in (s.REFERENCE, s.KEY, "integer"):
        return "integer"
    return spec.storage


@dataclass(frozen=True, slots=True)
class Alter:
    """How one existing column changes."""

    old: ColumnSpec
    new: ColumnSpec
    ddl: bool  # the column type or its foreign key changes
    replace: bool  # drop and re-add: the values cannot be converted
    data_loss: bool
    message: str


def classify_change(old: ColumnSpec, new: ColumnSpec) -> Alter | None:
    """How to get from ``old`` to ``new``; None when nothing differs."""
    where = f"{new.table}.{new.column} ({new.object_name}.{new.field_name})"
    change = f"{describe(old)} -> {describe(new)}"
    family = storage_family(new)
    if storage_family(old) != family or (old.storage == s.MULTI) != (new.storage == s.MULTI):
        return Alter(old, new, True, True, True, f"change type of {where}: {change}; existing values are discarded")
    if family == "text":
        old_len = None if old.storage == s.TEXT else old.length
        new_len = None if new.storage == s.TEXT else new.length
        if old_len == new_len:
            pass
        elif new_len is None or (old_len is not None and new_len > old_len):
            return Alter(old, new, True, False, False, f"widen {where}: {change}")
        else:
            return Alter(
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
            return Alter(old, new, True, False, bool(losses), text)
    elif family == "integer":
        if old.reference_to != new.reference_to and old.reference_to and new.reference_to:
            return Alter(
                old, new, True, True, True, f"change type of {where}: {change}; existing references are discarded"
            )
        if (old.reference_to, old.on_delete) != (new.reference_to, new.on_delete):
            return Alter(old, new, True, False, False, f"change the foreign key of {where}: {change}")
    if old.field_type != new.field_type:
        return Alter(old, new, False, False, False, f"change type of {where}: {change} (same storage)")
    return None


# ---------------------------------------------------------------------------
# Comparing with what the database holds


@dataclass
class TableDiff:
    """What changes in one existing table."""

    table: str
    object_name: str
    adds: list[ColumnSpec] = field(default_factory=list)
    drops: list[ColumnSpec] = field(default_factory=list)
    alters: list[Alter] = field(default_factory=list)
    index_drops: list[tuple[str, str]] = field(default_factory=list)  # (index, column)
    index_adds: list[tuple[str, ColumnSpec, bool]] = field(default_factory=list)  # (index, spec, unique)

    @property
    def empty(self) -> bool:
        return not (self.adds or self.drops or self.alters or self.index_drops or self.index_adds)


@dataclass
class SchemaDiff:
    """Everything a migration does: the target column specs per table,
    tables to create, tables to change, tables to drop, and the plan."""

    target: dict[str, tuple[ColumnSpec, ...]]
    creates: list[str] = field(default_factory=list)
    tables: list[TableDiff] = field(default_factory=list)
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


def _is_our_index(name: str | None) -> bool:
    return bool(name) and name.startswith(("ix_", "ixp_", "uq_"))


def _count_rows(conn: sa.Connection, table: str) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(sa.table(table))).scalar_one()


def compute_diff(conn: sa.Connection, model: OrgModel) -> SchemaDiff:
    """What must change for the database to match ``model``: per table, and
    as the plan of changes in the order they are applied."""
    target = s.model_specs(model)
    inspector = sa.inspect(conn)
    all_tables = set(inspector.get_table_names())
    existing = {t for t in all_tables if not t.startswith(s.INTERNAL_PREFIX) and not t.startswith("_alembic_tmp_")}
    snapshot = read_snapshot(conn, all_tables)
    diff = SchemaDiff(target=target)
    changes: list[Change] = []

    for table, specs in target.items():
        object_name = specs[0].object_name
        if table not in existing:
            diff.creates.append(table)
            changes.append(
                Change(CREATE_TABLE, object_name, None, f"create table {table} for {object_name}", False, True)
            )
            continue
        tdiff = TableDiff(table, object_name)
        current = _diff_columns(inspector, conn.dialect.name, specs, snapshot.get(table, {}), tdiff, changes)
        _diff_indexes(inspector, specs, current, tdiff, changes)
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
    diff.plan = MigrationPlan(tuple(_refuse_protected(conn, protected(model), diff, changes)))
    return diff


# ---------------------------------------------------------------------------
# Finalized records stay as they are


def _refuse_protected(conn: sa.Connection, guarded: Protected, diff: SchemaDiff,
                      changes: list[Change]) -> list[Change]:
    """``changes`` with every change marked :attr:`Change.refused` that would
    rewrite a value the immutability guards protect (:mod:`.guards`): a text
    cut, a number rounded or cleared, a column dropped or re-created, a table
    dropped, each only when a guarded row holds such a value. The guards
    cannot stop a migration (SQLite drops its triggers while it rebuilds a
    table), so the plan does."""
    found: dict[tuple[str, str | None], str] = {}
    for tdiff in diff.tables:
        table = sa.table(tdiff.table)
        rows = guarded.guarded_rows(table)
        if rows is None:
            continue
        columns = guarded.columns(tdiff.table)
        for old, changed in _rewrites(conn, tdiff):
            if columns is not None and old.column not in columns:
                continue
            hit = _affected(conn, guarded, table, rows, changed)
            if hit:
                found[(tdiff.object_name.lower(), (old.field_name or "").lower())] = (
                    f"{old.object_name}.{old.field_name}: {hit}")
    for table_name, object_name, _ in diff.drop_tables:
        table = sa.table(table_name)
        rows = guarded.guarded_rows(table)
        if rows is not None:
            hit = _affected(conn, guarded, table, rows, sa.true())
            if hit:
                found[(object_name.lower(), "")] = f"{object_name}: {hit}"
    if not found:
        return changes
    out = []
    for change in changes:
        reason = found.get((change.object_name.lower(), (change.field_name or "").lower()))
        if reason is not None and change.kind in (CHANGE_TYPE, DROP_COLUMN, DROP_TABLE):
            change = replace(change, refused=reason, message=f"{change.message}; REFUSED: {reason}")
        out.append(change)
    return out


def _rewrites(conn: sa.Connection, tdiff: TableDiff) -> Iterator[tuple[ColumnSpec, sa.ColumnElement[bool]]]:
    """(old column, condition on a row whose stored value the change rewrites)
    for every column change of ``tdiff`` that rewrites values."""
    sqlite = conn.dialect.name == "sqlite"
    for dropped in tdiff.drops:
        yield dropped, sa.literal_column(dropped.column).is_not(None)
    for alter in tdiff.alters:
        old, new = alter.old, alter.new
        column = sa.column(old.column, sa.BigInteger() if sqlite and old.storage == s.DECIMAL else None)
        if alter.replace:
            yield old, column.is_not(None)
        elif storage_family(new) == "text" and new.storage == s.STRING and (
                old.storage == s.TEXT or (old.length or 0) > new.length):
            yield old, sa.func.length(column) > new.length
        elif new.storage == s.DECIMAL and alter.data_loss:
            new_int = new.precision - new.scale
            if sqlite:
                # Minor units of the old scale: a value changes when it has
                # digits below the new scale or too many integer digits.
                conditions = []
                if new_int < old.precision - old.scale:
                    conditions.append(sa.func.abs(column) >= 10 ** (new_int + old.scale))
                if new.scale < old.scale:
                    conditions.append(column % (10 ** (old.scale - new.scale)) != 0)
            else:
                conditions = [sa.func.abs(sa.func.round(column, new.scale)) >= 10**new_int,
                              column != sa.func.round(column, new.scale)]
            yield old, sa.or_(*conditions)


def _affected(conn: sa.Connection, guarded: Protected, table: sa.TableClause, rows: sa.ColumnElement[bool],
              changed: sa.ColumnElement[bool]) -> str | None:
    """A description of the guarded rows of ``table`` that ``changed`` selects
    (how many, and the first invoice numbers), or None when there are none."""
    where = sa.and_(rows, changed)
    count = conn.execute(sa.select(sa.func.count()).select_from(table).where(where)).scalar_one()
    if not count:
        return None
    invoice_table = guarded.invoice[0] if guarded.invoice else None
    detail_table = guarded.detail[0] if guarded.detail else None
    document_table = guarded.document[0] if guarded.document else None
    if table.name == invoice_table:
        key, what = sa.literal_column("name"), "finalized invoice"
    elif table.name == detail_table:
        key, what = sa.literal_column("name"), "booking detail"
    elif table.name == document_table:
        key, what = sa.literal_column("invoice"), "issued document"
    else:
        key, what = sa.literal_column("invoice"), "line of a finalized invoice"
    sample = conn.execute(sa.select(key).select_from(table).where(where).order_by(key).limit(5)).scalars().all()
    if key.name == "invoice" and invoice_table:
        numbers = sa.select(sa.literal_column("name")).select_from(sa.table(invoice_table)) \
            .where(sa.literal_column("id").in_(sample)).order_by(sa.literal_column("name"))
        sample = conn.execute(numbers).scalars().all()
        names = f" (invoices {', '.join(map(str, sample))}{', ...' if count > len(sample) else ''})"
    else:
        names = f" ({', '.join(map(str, sample))}{', ...' if count > len(sample) else ''})"
    plural = "s" if count != 1 else ""
    return f"{count} {what}{plural} would change{names}; finalized records are immutable"


def _diff_columns(inspector, dialect: str, specs: tuple[ColumnSpec, ...], known: Mapping[str, ColumnSpec],
                  tdiff: TableDiff, changes: list[Change]) -> dict[str, ColumnSpec]:
    """Columns to add, alter and drop in an existing table (into ``tdiff``
    and ``changes``); returns the columns the table has now, as specs (the
    snapshot's, else adopted from reflection)."""
    table, object_name = tdiff.table, tdiff.object_name
    wanted = {spec.column: spec for spec in specs}
    reflected = {info["name"]: info for info in inspector.get_columns(table)}
    current: dict[str, ColumnSpec] = {}
    for name, info in reflected.items():
        current[name] = known.get(name) or _adopt(table, info, wanted.get(name), dialect, object_name)

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
        alter = classify_change(old, spec)
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
    return current


def _diff_indexes(inspector, specs: tuple[ColumnSpec, ...], current: Mapping[str, ColumnSpec],
                  tdiff: TableDiff, changes: list[Change]) -> None:
    """Indexes to drop and add, by reflection. Columns that are dropped or
    re-created take their indexes with them; new columns get theirs with the
    column."""
    table, object_name = tdiff.table, tdiff.object_name
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
