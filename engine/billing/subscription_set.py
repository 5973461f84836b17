"""The subscription run's lines written by SQL from a few distinct rows.

The lines of a month's subscription run are highly repetitive: every value
of a line but its position, its item and its invoice comes from a *template*
(:class:`~engine.billing.subscription_lines.LineRows`: the taxed, priced row
of one charge of items alike), and a batch of 10,000 lines uses a few
thousand templates. Converting and binding every full-width line in Python
was the largest single cost of the run after the decisions; here only the
distinct templates are converted (by the line writer's own converters, so
the same text and range checks raise the same errors) and staged into a
temporary table, the lines as narrow rows (id, name, invoice, position,
item, template) into another, and one ``INSERT ... SELECT`` joins them into
the line table, in line id order, with the batch's one timestamp.

The values stored are the ones the row writer (:class:`~engine.storage.bulk.RowWriter`)
stores for full rows: same ids (reserved as one block in line order), same
AutoNumber names, the same converted values (SQLite: the temporary columns
have no affinity, so a value reaches the line table exactly as it was bound;
PostgreSQL: the temporary tables copy the line table's column types). A
column that is NULL in every template is left out, as the row writer leaves
it out (its default is NULL). The guard that no line goes under a finalized
invoice is checked once for the set, as for every bulk line insert.
"""

from __future__ import annotations

import uuid
import weakref
from dataclasses import dataclass
from itertools import chain, repeat
from operator import itemgetter
from typing import Sequence

import sqlalchemy as sa

from engine.config.model import ObjectDef
from engine.storage.bulk import RowWriter, now_utc
from engine.storage.db import copy_rows
from engine.storage.ids import next_autonumbers, reserve_ids
from engine.storage.types import to_db_converter

from .build import line_position
from .subscription_lines import LineTemplate, RowDraft
from .writing import insert_selected_lines

#: The temporary tables: a run's templates (its own table, kept for the run,
#: see :class:`StagedTemplates`) and a batch's narrow lines (dropped after the insert).
TEMPLATES, STAGED = "mb_sub_tpl", "mb_sub_line"
#: The key, in a connection's ``info``, of the template tables of runs on that
#: connection (table name -> a weak reference to the run's StagedTemplates).
_TABLES = "metabill_subscription_templates"
#: Line keys set per line, not taken from its template.
PER_LINE = ("id", "name", "createddate", "lastmodifieddate", "invoice", "sequence", "subscriptionitem",
            "sourcerecordid")
_FIRST, _SECOND = itemgetter(0), itemgetter(1)


class StagedTemplates:
    """Which templates a run has staged into its table of templates, per database connection.

    A month's run uses some 20,000 distinct templates but each batch uses a
    few thousand, most of them staged by an earlier batch: re-staging every
    template a batch uses cost more than its lines' staging. Here a template
    gets a run-wide number (``tid``) when first staged, and stays in the
    temporary table of that connection (temporary tables live per
    connection) for the rest of the run; a batch stages only the templates
    the table lacks.

    The table is transactional: what a batch staged is only known to be there
    once the batch's transaction commits. So a batch's new templates are
    *pending* (:meth:`begin` forgets them, for a retried batch; :meth:`discard`
    after a rolled-back savepoint), and :meth:`settle`, called after the
    commit, adds them to the connection's staged set. Each run has a table
    of its own (:attr:`table`): two runs in one process share the engine's
    pool, and a batch's pending templates may be settled after its
    connection went back to the pool and served the other run, so one
    shared table would let their numbers meet. A run creates its table on a
    connection it first uses, and drops there the tables of runs that have
    ended (the connection's ``info`` lists them); every line insert is
    counted against the lines staged (:func:`write_staged`), so a template
    missing from the table would fail the batch, never drop a line."""

    def __init__(self) -> None:
        self._next = 0
        self.table = f"{TEMPLATES}_{uuid.uuid4().hex}"
        #: id of the driver connection -> (that connection, the tids committed in its table).
        self._staged: dict[int, tuple[object, set[int]]] = {}
        self._pending: list[tuple[object, list[int]]] = []

    def tid(self, template: LineTemplate) -> int:
        """The template's run-wide number (given on first use)."""
        if template.tid is None:
            template.tid = self._next
            self._next += 1
        return template.tid

    def missing(self, conn: sa.Connection, tids: Sequence[int]) -> tuple[bool, set[int]]:
        """Whether the connection's table must be (re)created, and which of
        ``tids`` it lacks (those become pending)."""
        driver = conn.connection.dbapi_connection
        known = self._staged.get(id(driver))
        fresh = known is None
        if fresh:
            self._adopt(conn)
        have = set() if known is None else known[1]
        lacking = {tid for tid in tids if tid not in have}
        self._pending.append((driver, list(lacking)))
        return fresh, lacking

    def _adopt(self, conn: sa.Connection) -> None:
        """List this run's table in the connection's ``info``; drop the tables
        of ended runs (their StagedTemplates gone) that it still holds."""
        tables: dict[str, weakref.ref] = conn.connection.info.setdefault(_TABLES, {})
        for name, run in list(tables.items()):
            if run() is None:
                _drop(conn, name)
                del tables[name]
        tables[self.table] = weakref.ref(self)

    def begin(self) -> None:
        """A batch (or its retry) starts: nothing of it is staged yet."""
        self._pending = []

    def discard(self) -> None:
        """The batch's staging was rolled back (savepoint)."""
        self._pending = []

    def settle(self) -> None:
        """The batch committed: its templates are in its connection's table."""
        for driver, tids in self._pending:
            entry = self._staged.setdefault(id(driver), (driver, set()))
            entry[1].update(tids)
        self._pending = []


@dataclass(frozen=True)
class StagedLines:
    """A batch's lines staged by :func:`stage_lines`, to be written by :func:`write_staged`."""

    statement: sa.TextClause
    count: int


def write_staged(conn: sa.Connection, invoice_obj: ObjectDef, invoice_ids: Sequence[int], staged: StagedLines) -> int:
    """Write the lines :func:`stage_lines` staged (one counted INSERT ... SELECT); returns their number."""
    # A template missing from the table would drop its lines: the count fails the batch instead.
    insert_selected_lines(conn, invoice_obj.table_name, invoice_ids, staged.statement, staged.count)
    _drop(conn, STAGED)
    return staged.count


def stage_lines(conn: sa.Connection, line_obj: ObjectDef, invoice_ids: Sequence[int], drafts: Sequence[RowDraft],
                stage: StagedTemplates) -> StagedLines | None:
    """Stage the lines of ``drafts`` (their headers already written, with
    ids ``invoice_ids`` in draft order) for :func:`write_staged`; None when
    there are none. Raises the row writer's ``ValueOutOfRange``/``TextTooLong``
    for a template value that does not fit, before anything is staged. The
    templates go into the run's table of templates (``stage``: only those it lacks)."""
    writer = RowWriter(conn, line_obj)
    # Per line (all at C speed): its template, item, invoice and position.
    lines = list(chain.from_iterable(draft.lines for draft in drafts))
    if not lines:
        return None
    of_line = list(map(_FIRST, lines))
    items = list(map(_SECOND, lines))
    invoices = list(chain.from_iterable(repeat(i, len(d.lines)) for i, d in zip(invoice_ids, drafts)))
    positions = list(chain.from_iterable(range(1, len(d.lines) + 1) for d in drafts))
    # The distinct templates in order of first use; each line's run-wide template number.
    used = list(dict(zip(map(id, of_line), of_line)).values())  # one id, one (living) template
    slot = {id(template): stage.tid(template) for template in used}
    tids = list(map(slot.__getitem__, map(id, of_line)))
    names = _convert_templates(writer, used)
    per_line = {writer.column_name(key) for key in PER_LINE}
    staged = [index for index, name in enumerate(names) if name not in per_line]
    # A column NULL in every template of the batch is left out, as the row
    # writer leaves it out (its default is NULL; binding None is the driver's dearest value).
    filled = set().union(*(template.filled for template in used))  # type: ignore[misc]
    columns = [names[index] for index in staged if index in filled]
    count = len(lines)
    ids = reserve_ids(conn, line_obj.table_name, count)
    line_names = next_autonumbers(conn, line_obj, count) if writer.autonumber is not None else [None] * count
    # Positions as the writer converts a line's sequence (the same Decimal per position as build_invoice's).
    distinct = sorted(set(positions))
    converted = dict(zip(distinct, writer.column_values("sequence", [line_position(p) for p in distinct])))
    stamp = writer.column_values("createddate", [now_utc()])[0]
    fresh, lacking = stage.missing(conn, [slot[id(template)] for template in used])
    pick = itemgetter(*staged) if len(staged) > 1 else (lambda row: tuple(row[i] for i in staged))
    templates = [(slot[id(template)], *pick(template.driver)) for template in used  # type: ignore[arg-type]
                 if slot[id(template)] in lacking]
    quote = conn.dialect.identifier_preparer.quote
    into = (f"INSERT INTO {quote(line_obj.table_name)} ("
            + ", ".join(quote(c) for c in [writer.column_name(key) for key in PER_LINE] + columns) + ") ")
    from_templates = ", ".join(f"t.{quote(c)}" for c in columns)
    _drop(conn, STAGED)
    _stage(conn, line_obj, writer, [names[index] for index in staged], stage.table, fresh, templates, list(zip(
        ids, line_names, invoices, map(converted.__getitem__, positions), items, tids)))
    # The source record id is the item id as text (str() of an integer and SQL's CAST give the same digits).
    statement = sa.text(f"{into} SELECT l.id, l.name, :stamp, :stamp, l.inv, l.seq, l.item, CAST(l.item AS TEXT), "
                        f"{from_templates} FROM {STAGED} l JOIN {stage.table} t ON t.tid = l.tid "
                        f"ORDER BY l.id").bindparams(stamp=stamp)
    return StagedLines(statement, count)


def mark_billed(conn: sa.Connection, obj: ObjectDef, invoice_obj: ObjectDef, run_id: int | None, low: int,
                high: int) -> None:
    """The run on, and no error on, the subscriptions (``obj``) of the
    invoices with ids ``low`` to ``high`` (a batch's, one block): one UPDATE
    instead of one per subscription."""
    q = conn.dialect.identifier_preparer.quote
    column = lambda name: q(obj.field(name).column_name)  # type: ignore[union-attr]  # noqa: E731
    stamp = to_db_converter(obj.field("LastModifiedDate"), conn.dialect.name)(now_utc())  # type: ignore[arg-type]
    of_batch = (f"SELECT {q(invoice_obj.field('Subscription').column_name)} "  # type: ignore[union-attr]
                f"FROM {q(invoice_obj.table_name)} WHERE id BETWEEN :low AND :high")
    conn.execute(sa.text(
        f"UPDATE {q(obj.table_name)} SET {column('LastInvoiceRun')} = :run, {column('InvoiceBuildError')} = NULL, "
        f"{column('LastModifiedDate')} = :stamp WHERE id IN ({of_batch})"
    ).bindparams(run=run_id, stamp=stamp, low=low, high=high))


def _convert_templates(writer: RowWriter, templates: list[LineTemplate]) -> tuple[str, ...]:
    """Give each template without them its driver values (every column, in
    the writer's order: a template is converted once in its life, however
    many batches use it) and the indexes of its columns not NULL; returns
    the column names."""
    fresh = [template for template in templates if template.driver is None]
    names, rows = writer.rows_of_values([template.row for template in fresh] or [[None] * len(writer.keys)],
                                        omit_nulls=False)
    for template, row in zip(fresh, rows):
        template.driver = row
        template.filled = frozenset(index for index, value in enumerate(row) if value is not None)
    return names


def _stage(conn: sa.Connection, line_obj: ObjectDef, writer: RowWriter, columns: list[str], templates_table: str,
           fresh: bool, templates: list[tuple], lines: list[tuple]) -> None:
    """Fill the temporary tables: ``templates`` (tid, then ``columns``: every
    column a template gives) into the run's table of templates ``templates_table`` (created
    first when ``fresh``: the run's first batch on this connection, see
    :class:`StagedTemplates`), ``lines`` (id, name, invoice, sequence, item,
    tid) into a new table of the batch's lines. SQLite:
    untyped columns (no affinity: a value keeps the type it was bound with),
    one ``executemany`` each (one prepared INSERT ... SELECT per line instead
    cost three times as much); PostgreSQL: the line table's column types, COPY."""
    quote = conn.dialect.identifier_preparer.quote
    line_columns = ("id", "name", "inv", "seq", "item", "tid")
    table = quote(line_obj.table_name)
    picked = ", ".join(f"{quote(c)}" for c in columns)
    own = [quote(writer.column_name(k)) for k in ("id", "name", "invoice", "sequence", "subscriptionitem")]
    if fresh:
        _drop(conn, templates_table)
    if conn.dialect.name == "sqlite":
        if fresh:
            conn.exec_driver_sql(f"CREATE TEMP TABLE {templates_table} (tid INTEGER PRIMARY KEY"
                                 + "".join(f", {quote(c)}" for c in columns) + ")")
        conn.exec_driver_sql(f"CREATE TEMP TABLE {STAGED} (id INTEGER PRIMARY KEY, name, inv, seq, item, tid)")
        if templates:
            marks = ", ".join("?" * (len(columns) + 1))
            conn.exec_driver_sql(f"INSERT INTO {templates_table} VALUES ({marks})", templates)
        conn.exec_driver_sql(f"INSERT INTO {STAGED} VALUES (?, ?, ?, ?, ?, ?)", lines)
        return
    if fresh:
        conn.exec_driver_sql(f"CREATE TEMP TABLE {templates_table} AS SELECT CAST(NULL AS BIGINT) AS tid"
                             f"{', ' + picked if picked else ''} FROM {table} WITH NO DATA")
        conn.exec_driver_sql(f"ALTER TABLE {templates_table} ADD PRIMARY KEY (tid)")
    conn.exec_driver_sql(f"CREATE TEMP TABLE {STAGED} AS SELECT "
                         + ", ".join(f"{c} AS {n}" for c, n in zip(own, line_columns))
                         + f", CAST(NULL AS BIGINT) AS tid FROM {table} WITH NO DATA")
    # The planner needs the row counts and the join keys, not the statistics
    # of every template column (ANALYZE would compute them all).
    if templates:
        copy_rows(conn, templates_table, ["tid", *columns], templates)
        conn.exec_driver_sql(f"ANALYZE {templates_table} (tid)")
    copy_rows(conn, STAGED, line_columns, lines)
    conn.exec_driver_sql(f"ANALYZE {STAGED} (id, tid)")


def _drop(conn: sa.Connection, name: str) -> None:
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
