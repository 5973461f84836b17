"""The relational schema derived from the metadata model.

Every data object (``ObjectKind.OBJECT``; settings live in YAML, not in
tables) becomes one table named after its lower-cased API name:

* ``id`` - BIGINT primary key. Ids are handed out by the engine
  (:mod:`.ids`), never by the database, so bulk inserts need no RETURNING and
  behave the same on both backends. On SQLite the column is declared
  ``INTEGER`` so it becomes the rowid (same 64-bit range, no extra index).
* ``name`` - the record name (a Text or AutoNumber ``Name`` field).
* ``createddate``, ``lastmodifieddate`` - UTC timestamps, set by the engine.
* one column per stored field; formula fields have no column.

Required fields are *not* NOT NULL: the engine enforces ``required`` on write,
and that keeps adding a required field to a table that has rows possible.

The mapping goes through :class:`ColumnSpec`, a flat, JSON-serialisable
description of one column. The same specs are snapshotted into
``_mb_schema_field`` when a migration is applied, and :mod:`.migrate`
compares the snapshot with the specs of the current model.

Constraint and index names are deterministic and at most 63 characters (the
PostgreSQL limit), so a name is the same on every backend and every run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Iterable, Mapping

import sqlalchemy as sa

from engine.config.model import FieldDef, FieldType, ObjectDef, OrgModel

from .types import ExactDecimal, MultiPicklistText, UtcDateTime, numeric_shape

#: Prefix of the engine's own bookkeeping tables.
INTERNAL_PREFIX = "_mb_"
#: Longest identifier PostgreSQL keeps; longer names are shortened with a hash.
MAX_IDENTIFIER = 63

ID = "id"
NAME = "name"
CREATED = "createddate"
MODIFIED = "lastmodifieddate"
#: Columns every data table has; no field of the model maps onto them directly
#: (the Name field only decides the type of ``name``).
SYSTEM_COLUMNS = (ID, NAME, CREATED, MODIFIED)

DEFAULT_TEXT_LENGTH = 255
AUTONUMBER_LENGTH = 80

# Storage kinds: what a column physically is, independent of the field type
# (Picklist and Text(255) store the same way).
STRING = "string"
TEXT = "text"
MULTI = "multipicklist"
DECIMAL = "decimal"
BOOLEAN = "boolean"
DATE = "date"
DATETIME = "datetime"
REFERENCE = "reference"
KEY = "id"

SET_NULL = "SET NULL"
CASCADE = "CASCADE"


def identifier(prefix: str, table: str, column: str | None = None) -> str:
    """``prefix_table[_column]``, shortened deterministically to at most 63
    characters by replacing the tail with a hash of the full name."""
    full = f"{prefix}_{table}" + (f"_{column}" if column else "")
    if len(full) <= MAX_IDENTIFIER:
        return full
    digest = hashlib.sha1(full.encode("utf-8")).hexdigest()[:10]
    return f"{full[: MAX_IDENTIFIER - len(digest) - 1]}_{digest}"


def _first_column(constraint: sa.Constraint | sa.Index) -> str | None:
    columns = list(constraint.columns) if hasattr(constraint, "columns") else []
    if columns:
        return columns[0].name
    expressions = getattr(constraint, "expressions", ())
    return str(expressions[0]) if expressions else None


def _convention(prefix: str):
    def token(constraint, table):
        return identifier(prefix, table.name, _first_column(constraint))

    return token


#: Names for anything created without an explicit name (e.g. by alembic's
#: batch mode while it rebuilds a SQLite table).
NAMING_CONVENTION = {
    "mb_ix": _convention("ix"),
    "mb_uq": _convention("uq"),
    "mb_fk": _convention("fk"),
    "mb_ck": _convention("ck"),
    "ix": "%(mb_ix)s",
    "uq": "%(mb_uq)s",
    "fk": "%(mb_fk)s",
    "ck": "%(mb_ck)s",
    "pk": "pk_%(table_name)s",
}


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """How one field (or system column) is stored.

    ``object_name``/``field_name`` keep the API spelling for messages;
    ``field_type`` is the declared FieldType value; everything else decides
    the DDL.
    """

    table: str
    column: str
    object_name: str
    field_name: str
    field_type: str
    storage: str
    length: int | None = None
    precision: int | None = None
    scale: int | None = None
    unique: bool = False
    reference_to: str | None = None
    on_delete: str | None = None
    #: A reference most rows leave empty (the field's ``sparse``): its index
    #: holds only the rows that set it (a partial index, ``IS NOT NULL``).
    sparse: bool = False

    def to_json(self) -> str:
        data = asdict(self)
        if not self.sparse:
            del data["sparse"]  # the snapshots of databases migrated before the key stay as they are
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "ColumnSpec":
        data = json.loads(text)
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__ if k in data})

    @property
    def index_name(self) -> str:
        """The plain index of a reference; a sparse one's partial index has
        a name of its own (``ixp_``), so that turning ``sparse`` on or off
        is an index dropped and one added, as the migration compares indexes
        by name."""
        return identifier("ixp" if self.sparse else "ix", self.table, self.column)

    @property
    def unique_name(self) -> str:
        return identifier("uq", self.table, self.column)

    @property
    def fk_name(self) -> str:
        return identifier("fk", self.table, self.column)

    @property
    def indexes(self) -> tuple[tuple[str, bool], ...]:
        """The (name, unique) indexes this column needs: a unique index for
        unique/external-id fields, a plain one for references (foreign keys
        are not indexed automatically, and cascades scan the child)."""
        if self.unique:
            return ((self.unique_name, True),)
        if self.storage == REFERENCE:
            return ((self.index_name, False),)
        return ()

    def index_options(self) -> dict[str, sa.TextClause]:
        """The keyword arguments that make this column's index partial when
        the column is sparse (``IS NOT NULL``; both supported databases
        take a predicate and use such an index for ``=``, ``IN`` and joins,
        which imply it)."""
        if not (self.sparse and self.storage == REFERENCE and not self.unique):
            return {}
        where = sa.text(f'"{self.column}" IS NOT NULL')
        return {"sqlite_where": where, "postgresql_where": where}


def name_field(obj: ObjectDef) -> FieldDef | None:
    """The object's ``Name`` field, Text or AutoNumber, if declared."""
    return obj.field("Name")


def autonumber_fields(obj: ObjectDef) -> tuple[FieldDef, ...]:
    return tuple(f for f in obj.fields if f.type is FieldType.AUTONUMBER)


def is_system_column(field: FieldDef) -> bool:
    return field.column_name in SYSTEM_COLUMNS


def data_fields(obj: ObjectDef) -> tuple[FieldDef, ...]:
    """The stored fields with a column of their own (not system columns)."""
    return tuple(f for f in obj.fields if f.is_stored and not is_system_column(f))


def _field_spec(obj: ObjectDef, field: FieldDef, model: OrgModel, column: str) -> ColumnSpec:
    base = dict(
        table=obj.table_name,
        column=column,
        object_name=obj.name,
        field_name=field.name,
        field_type=field.type.value,
        unique=bool(field.unique or field.external_id),
    )
    kind = field.type
    if kind is FieldType.AUTONUMBER:
        return ColumnSpec(storage=STRING, length=AUTONUMBER_LENGTH, **base)
    if kind in (FieldType.TEXT, FieldType.EMAIL, FieldType.URL, FieldType.PICKLIST):
        return ColumnSpec(storage=STRING, length=field.length or DEFAULT_TEXT_LENGTH, **base)
    if kind is FieldType.LONGTEXT:
        return ColumnSpec(storage=TEXT, **base)
    if kind is FieldType.MULTIPICKLIST:
        return ColumnSpec(storage=MULTI, **base)
    if kind.is_numeric:
        precision, scale = numeric_shape(field)
        return ColumnSpec(storage=DECIMAL, precision=precision, scale=scale, **base)
    if kind is FieldType.CHECKBOX:
        return ColumnSpec(storage=BOOLEAN, **base)
    if kind is FieldType.DATE:
        return ColumnSpec(storage=DATE, **base)
    if kind is FieldType.DATETIME:
        return ColumnSpec(storage=DATETIME, **base)
    if kind.is_reference or kind is FieldType.ID:
        target = model.object(field.reference_to) if field.reference_to else None
        if target is None or target.is_setting:
            # Nothing to point a foreign key at: keep the id, skip the constraint.
            return ColumnSpec(storage=REFERENCE, **base)
        on_delete = CASCADE if kind is FieldType.MASTERDETAIL else SET_NULL
        return ColumnSpec(storage=REFERENCE, reference_to=target.table_name, on_delete=on_delete,
                          sparse=field.sparse, **base)
    raise ValueError(f"field {obj.name}.{field.name} of type {kind.value} cannot be stored")


def object_specs(obj: ObjectDef, model: OrgModel) -> tuple[ColumnSpec, ...]:
    """The columns of ``obj``'s table, in table order."""
    table = obj.table_name
    specs = [ColumnSpec(table, ID, obj.name, "Id", FieldType.ID.value, KEY)]
    name = name_field(obj)
    if name is not None and name.is_stored:
        specs.append(_field_spec(obj, name, model, NAME))
    else:
        specs.append(
            ColumnSpec(table, NAME, obj.name, "Name", FieldType.TEXT.value, STRING, length=DEFAULT_TEXT_LENGTH)
        )
    specs.append(ColumnSpec(table, CREATED, obj.name, "CreatedDate", FieldType.DATETIME.value, DATETIME))
    specs.append(ColumnSpec(table, MODIFIED, obj.name, "LastModifiedDate", FieldType.DATETIME.value, DATETIME))
    specs.extend(_field_spec(obj, f, model, f.column_name) for f in data_fields(obj))
    return tuple(specs)


def model_specs(model: OrgModel) -> dict[str, tuple[ColumnSpec, ...]]:
    """Table name -> column specs for every data object of the model."""
    return {obj.table_name: object_specs(obj, model) for obj in model.data_objects}


def sql_type(spec: ColumnSpec) -> sa.types.TypeEngine:
    """The SQLAlchemy type of a column spec."""
    storage = spec.storage
    if storage == KEY:
        # INTEGER PRIMARY KEY is SQLite's rowid alias; elsewhere a BIGINT.
        return sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    if storage == STRING:
        return sa.String(spec.length or DEFAULT_TEXT_LENGTH)
    if storage == TEXT:
        return sa.Text()
    if storage == MULTI:
        return MultiPicklistText()
    if storage == DECIMAL:
        return ExactDecimal(spec.precision, spec.scale)
    if storage == BOOLEAN:
        return sa.Boolean(create_constraint=False)
    if storage == DATE:
        return sa.Date()
    if storage == DATETIME:
        return UtcDateTime()
    if storage == REFERENCE:
        return sa.BigInteger()
    raise ValueError(f"unknown storage kind {storage!r}")


def make_column(spec: ColumnSpec) -> sa.Column:
    """A fresh Column for ``spec`` (with its foreign key, without indexes)."""
    args: list = []
    kwargs: dict = {}
    if spec.storage == KEY:
        kwargs.update(primary_key=True, autoincrement=False, nullable=False)
    elif spec.storage == BOOLEAN:
        # Checkbox values are never NULL; the server default lets a new
        # checkbox column be added to a table that already has rows.
        kwargs.update(nullable=False, server_default=sa.false())
    elif spec.column in (CREATED, MODIFIED):
        kwargs.update(nullable=False)
    else:
        kwargs.update(nullable=True)
    if spec.storage == REFERENCE and spec.reference_to:
        args.append(sa.ForeignKey(f"{spec.reference_to}.{ID}", ondelete=spec.on_delete, name=spec.fk_name))
    return sa.Column(spec.column, sql_type(spec), *args, **kwargs)


def make_indexes(spec: ColumnSpec, table: sa.Table | str) -> list[sa.Index]:
    """The indexes of ``spec``, bound to ``table`` when a Table is given."""
    indexes = []
    for name, unique in spec.indexes:
        if isinstance(table, sa.Table):
            indexes.append(sa.Index(name, table.c[spec.column], unique=unique, **spec.index_options()))
        else:  # pragma: no cover - used only with tables
            indexes.append(sa.Index(name, spec.column, unique=unique, **spec.index_options()))
    return indexes


def add_table(metadata: sa.MetaData, specs: Iterable[ColumnSpec]) -> sa.Table:
    specs = tuple(specs)
    table_name = specs[0].table
    table = sa.Table(
        table_name,
        metadata,
        *(make_column(s) for s in specs),
    )
    table.primary_key.name = identifier("pk", table_name)
    for spec in specs:
        make_indexes(spec, table)
    return table


# ---------------------------------------------------------------------------
# Internal tables

INTERNAL = sa.MetaData(naming_convention=NAMING_CONVENTION)

#: The applied definition of every column, what ``db plan`` compares against.
SCHEMA_FIELD = sa.Table(
    "_mb_schema_field",
    INTERNAL,
    sa.Column("table_name", sa.String(128), primary_key=True),
    sa.Column("column_name", sa.String(128), primary_key=True),
    sa.Column("object_name", sa.String(128), nullable=False),
    sa.Column("field_name", sa.String(128), nullable=False),
    sa.Column("definition", sa.Text(), nullable=False),
)

#: Named counters: record ids per table and AutoNumber values per field.
SEQUENCE = sa.Table(
    "_mb_sequence",
    INTERNAL,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("next_value", sa.BigInteger(), nullable=False),
)

#: Key/value facts about the database (schema_version, config_hash, ...).
META = sa.Table(
    "_mb_meta",
    INTERNAL,
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("value", sa.Text(), nullable=False),
)

#: Billing claims: which invoice billed a source record under which
#: transactional suffix. The primary key is the database's own guarantee that a
#: source record is billed at most once per suffix, whatever races the engine
#: loses (domain invariant I1). Released when a draft is deleted or an invoice
#: canceled.
CLAIM = sa.Table(
    "_mb_claim",
    INTERNAL,
    sa.Column("source_table", sa.String(128), primary_key=True),
    sa.Column("source_id", sa.BigInteger(), primary_key=True),
    sa.Column("suffix", sa.String(5), primary_key=True),
    sa.Column("invoice_id", sa.BigInteger(), nullable=False, index=True),
    sa.Column("run_id", sa.BigInteger(), nullable=True),
)

#: The work queue of a parallel invoice run (``engine.billing.workqueue``):
#: one row per round of a run (what a worker needs to join it), one per chunk
#: (its state, owner, heartbeat, attempts, figures), and the (group key,
#: record id) pairs that a pass 1 chunk hands to the pass 2 chunks of its
#: filter. Times are milliseconds since the epoch of the writer's clock.
WORK_ROUND = sa.Table(
    "_mb_work_round",
    INTERNAL,
    sa.Column("run_id", sa.BigInteger(), primary_key=True),
    sa.Column("round", sa.Integer(), primary_key=True),
    sa.Column("request", sa.Text(), nullable=False),
    sa.Column("config_hash", sa.String(64), nullable=False),
    sa.Column("state", sa.String(10), nullable=False),
    sa.Column("created_at", sa.BigInteger(), nullable=False),
    sa.Column("closed_at", sa.BigInteger(), nullable=True),
)
WORK_CHUNK = sa.Table(
    "_mb_work_chunk",
    INTERNAL,
    sa.Column("run_id", sa.BigInteger(), primary_key=True),
    sa.Column("round", sa.Integer(), primary_key=True),
    sa.Column("stage", sa.Integer(), primary_key=True),
    sa.Column("chunk", sa.Integer(), primary_key=True),
    sa.Column("filter", sa.String(255), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("parts", sa.Integer(), nullable=False),
    sa.Column("state", sa.String(10), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("owner_token", sa.String(64), nullable=True),
    sa.Column("owner_host", sa.String(255), nullable=True),
    sa.Column("owner_pid", sa.BigInteger(), nullable=True),
    sa.Column("owner_started", sa.String(40), nullable=True),
    sa.Column("claimed_at", sa.BigInteger(), nullable=True),
    sa.Column("heartbeat_at", sa.BigInteger(), nullable=True),
    sa.Column("finished_at", sa.BigInteger(), nullable=True),
    sa.Column("records", sa.BigInteger(), nullable=False),
    sa.Column("invoices", sa.BigInteger(), nullable=False),
    sa.Column("lines", sa.BigInteger(), nullable=False),
    sa.Column("result", sa.Text(), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Index("ix__mb_work_chunk_state", "run_id", "round", "state", "stage"),
)
WORK_KEYS = sa.Table(
    "_mb_work_keys",
    INTERNAL,
    sa.Column("run_id", sa.BigInteger(), primary_key=True),
    sa.Column("round", sa.Integer(), primary_key=True),
    sa.Column("stage", sa.Integer(), primary_key=True),
    sa.Column("bucket", sa.Integer(), primary_key=True),
    sa.Column("source_chunk", sa.Integer(), primary_key=True),
    sa.Column("pairs", sa.Text(), nullable=False),
)

INTERNAL_TABLES = (SCHEMA_FIELD.name, SEQUENCE.name, META.name, CLAIM.name)

#: Tables created on first use by the feature that needs them (not by
#: migrations, so databases created before the feature need no migration).
ON_DEMAND = sa.MetaData(naming_convention=NAMING_CONVENTION)

#: Executed job-schedule slots: a slot is the wall-clock time a schedule
#: fired at in its time zone, so the repeated hour of a daylight-saving
#: fall-back finds its slot taken and the job does not run twice. The
#: primary key is the guarantee, whatever races the scheduler loses.
JOB_SLOT = sa.Table(
    "_mb_job_slot",
    ON_DEMAND,
    sa.Column("schedule", sa.String(255), primary_key=True),
    sa.Column("slot", sa.String(32), primary_key=True),
    sa.Column("job", sa.String(80), nullable=False),
    sa.Column("run", sa.String(64), nullable=False),
    sa.Column("started_at", sa.String(32), nullable=False),
)


#: The processes working on an invoice run right now: one row per process
#: (several may join one run), written when it opens or joins the run and
#: removed when it closes it. A run whose status is Running but none of whose
#: owners is alive was left by a process that died (see
#: ``engine.billing.runrecord``): the next run of the same filters, or
#: ``metabill runs --recover``, recovers it.
RUN_OWNER = sa.Table(
    "_mb_run_owner",
    ON_DEMAND,
    sa.Column("run_id", sa.BigInteger(), primary_key=True),
    sa.Column("token", sa.String(64), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.BigInteger(), nullable=False),
    sa.Column("process_started", sa.String(40), nullable=True),
    sa.Column("started_at", sa.String(32), nullable=False),
    sa.Column("heartbeat_at", sa.String(32), nullable=False),
)

#: Export files recorded in the transaction that marks their content
#: exported (DATEV): the file's name, its content and hash. The file is
#: published after the commit; a batch whose file is missing (the process
#: died between the commit and the rename) is written again from here, so no
#: exported booking is ever lost to the accountant (``engine.exports.datev``).
EXPORT_BATCH = sa.Table(
    "_mb_export_batch",
    ON_DEMAND,
    sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=False),
    sa.Column("destination", sa.String(40), nullable=False),
    sa.Column("path", sa.Text(), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger(), nullable=False),
    sa.Column("content", sa.LargeBinary(), nullable=False),
    sa.Column("details", sa.BigInteger(), nullable=False),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("published_at", sa.String(32), nullable=True),
)


def build_metadata(model: OrgModel) -> sa.MetaData:
    """A MetaData with one table per data object plus the internal tables.

    A fresh one per call: a command builds it once, in its runtime context
    (``ctx.metadata``, :mod:`engine.storage.context`), and every layer uses
    that one."""
    return metadata_from_specs(model_specs(model))


def metadata_from_specs(specs: Mapping[str, Iterable[ColumnSpec]]) -> sa.MetaData:
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    for table_specs in specs.values():
        add_table(metadata, table_specs)
    for table in INTERNAL.tables.values():
        table.to_metadata(metadata)
    return metadata


def data_table(metadata: sa.MetaData, obj: ObjectDef) -> sa.Table:
    """The table of ``obj`` in a MetaData from :func:`build_metadata`."""
    try:
        return metadata.tables[obj.table_name]
    except KeyError:
        raise KeyError(f"{obj.name} has no table (only data objects are stored)") from None
