"""Which part of a filter the set-based path can evaluate in SQL, decided once per run.

The set-based path (:mod:`engine.billing.setrun`) evaluates a filter's
*line* records in the database: each InvoiceLineItem field the run fills
from a line record (the controlling fields ON_Title, ON_Quantity,
ON_UnitPrice and the ON copies) becomes one SQL expression over the line
table and the tables its lookups reach. :func:`plan_set` compiles the filter
plan into a :class:`SetPlan`, or says why it cannot (``SetPlan.reasons``,
one sentence each): then the whole filter runs on the Python path.

What compiles is exactly what the Python getters read without evaluating a
formula: a stored field, or a formula that is nothing but a field path
(:func:`engine.billing.plan.bare_path_field`), of the same kind as its
target (text into text, number into number with no more decimals than the
target keeps, date into date). Anything else — a computed formula, a
line-level invoice criterion, a copy into a field the run computes itself,
rounding per tax group — is a reason, so the differential test
(``tests/billing/test_setbased.py``) can hold both paths to identical
results on what the set path does take.

The SQL pieces the batches share live here too: the names of the set
path's temporary tables and :func:`order_lines`, the numbering of a
batch's staged lines.

Per-row problems (an empty title, a text too long for its column, a number
out of range) are not decided here: the batch looks for them in SQL and
hands the groups concerned to the Python path, which reports them as it
always does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import sqlalchemy as sa

from engine.config.model import FieldDef, FieldType, ObjectDef
from engine.storage.context import Context

from .build import InvariantError
from .plan import FilterPlan, bare_path_field

#: The set path's temporary tables (:mod:`engine.billing.setrun`): the batch's
#: header records, their staged lines, the tax decisions, the groups as
#: written and the lines' numbering.
SRC, LINE, TAX, GRP, ORD = "mb_set_src", "mb_set_line", "mb_set_tax", "mb_set_grp", "mb_set_ord"

#: Source kinds a target kind may be filled from in SQL (the stored value is
#: then exactly what the Python coercer would keep).
_TEXT_KINDS = (FieldType.TEXT, FieldType.LONGTEXT, FieldType.PICKLIST, FieldType.EMAIL, FieldType.URL)
_NUMBER_KINDS = (FieldType.NUMBER, FieldType.CURRENCY, FieldType.PERCENT)
#: InvoiceLineItem fields the run itself computes or sets: a copy into one
#: of them changes ordering, tax or amounts, which the set path leaves to Python.
RUN_SET_FIELDS = frozenset({
    "sequence", "taxrate", "taxcode", "appliedtaxrule", "vatcategorycode", "serviceperiodstart",
    "serviceperiodend", "postotalnet", "postotaltax", "postotalgross", "unitpricenet", "invoice",
    "sourceobject", "sourcerecordid", "isdeduction", "subinvoice",
})
#: Quantities and unit prices the SQL amounts take (absolute, in units):
#: below it ``quantity × unit price`` and ``net × tax rate`` stay exact in
#: SQLite's 64-bit integers (with scale 4 each and a rate below 1000 %).
#: Lines beyond go to the Python path.
AMOUNT_BOUND = 10 ** 5
#: Tax rates (percent, absolute) the SQL amounts take; see AMOUNT_BOUND.
RATE_BOUND = 1000


@dataclass(frozen=True)
class Step:
    """One stored source field of a line column, reached from the line
    object through ``lookups`` (each a lookup field, left-joined)."""

    lookups: tuple[FieldDef, ...]
    source: FieldDef


@dataclass(frozen=True)
class LineColumn:
    """An InvoiceLineItem field filled in SQL: its steps in the order the
    Python program runs them (a later non-blank value wins)."""

    target: FieldDef
    steps: tuple[Step, ...]

    @property
    def key(self) -> str:
        return self.target.key


@dataclass
class SetPlan:
    """A filter's line program as SQL (see the module docstring)."""

    line_obj: ObjectDef
    columns: list[LineColumn] = field(default_factory=list)
    tax_fields: tuple[str, ...] = ()   # InvoiceLineItem keys the tax rules read
    reasons: list[str] = field(default_factory=list)

    @property
    def eligible(self) -> bool:
        return not self.reasons

    def column(self, key: str) -> LineColumn | None:
        return next((c for c in self.columns if c.key == key), None)


def plan_set(ctx: Context, plan: FilterPlan, tax_line_fields: Sequence[str], rounding: str) -> SetPlan:
    """Compile ``plan``'s line program; ``tax_line_fields`` are the line
    fields the tax rules read, ``rounding`` the run's rounding mode."""
    target_obj = ctx.obj("InvoiceLineItem")
    out = SetPlan(plan.line.obj)
    if rounding != "PerLine":
        out.reasons.append(f"rounding mode {rounding} (the set path rounds per line)")
    if not plan.single and "ON_InvoiceCriterion" in plan.line.controls:
        out.reasons.append("a line-level ON_InvoiceCriterion splits invoices per line")
    steps: dict[str, list[Step]] = {}
    targets: dict[str, FieldDef] = {}
    copies = [(s, t) for s, t, name in plan.line.copies if name == "InvoiceLineItem"]
    controls = [(plan.line.controls.get(base), target_obj.field(key))
                for base, key in (("ON_Title", "title"), ("ON_Quantity", "quantity"), ("ON_UnitPrice", "unitprice"))]
    for source, target in copies + [(s, t) for s, t in controls if s is not None]:
        assert target is not None
        step, why = _step(ctx, plan.line.obj, source, target)
        if why:
            out.reasons.append(why)
            continue
        steps.setdefault(target.key, []).append(step)  # type: ignore[arg-type]
        targets[target.key] = target
    out.columns = [LineColumn(targets[key], tuple(found)) for key, found in steps.items()]
    for column in out.columns:
        if len(column.steps) > 1:
            # Python checks every source value before a later one wins; the
            # batch's SQL checks only the value that is written.
            out.reasons.append(f"{len(column.steps)} fields fill InvoiceLineItem.{column.target.name}")
    for key in tax_line_fields:
        target = target_obj.field(key)
        if key in RUN_SET_FIELDS or key in ("quantity", "unitprice"):
            out.reasons.append(f"tax rules read InvoiceLineItem.{key}, which the run sets itself")
        elif target is None or target.type not in _TEXT_KINDS:
            out.reasons.append(f"tax rules read InvoiceLineItem.{key}, which is not text")
    out.tax_fields = tuple(tax_line_fields)
    return out


def _step(ctx: Context, obj: ObjectDef, source: FieldDef, target: FieldDef) -> tuple[Step | None, str | None]:
    """The stored field behind ``source`` with its lookup path, or why there is none."""
    label = f"{source.name} -> InvoiceLineItem.{target.name}"
    if target.key in RUN_SET_FIELDS:
        return None, f"{label}: the run computes this field itself"
    if target.type.is_reference or target.type not in _TEXT_KINDS + _NUMBER_KINDS + (FieldType.DATE,) \
            or target.type is FieldType.PICKLIST:
        return None, f"{label}: a {target.type.value} target is left to the Python path"
    lookups: list[FieldDef] = []
    stored = source
    if source.formula is not None:
        stored = bare_path_field(ctx, source)  # type: ignore[assignment]
        compiled = source.formula.compiled
        if stored is None or compiled is None:
            return None, f"{label}: the formula {source.formula.expression!r} is not a plain field path"
        path = next(iter(compiled.references))
        current: ObjectDef | None = obj
        for name in path[:-1]:
            lookup = current.relationship(name) if current else None
            if lookup is None or not lookup.reference_to or not lookup.is_stored:
                return None, f"{label}: the path {'.'.join(path)} has no stored lookup {name}"
            lookups.append(lookup)
            current = ctx.model.object(lookup.reference_to)
    if not stored.is_stored or stored.type.is_reference:
        return None, f"{label}: {stored.name} is not a stored value field"
    if target.type in _TEXT_KINDS:
        if stored.type not in _TEXT_KINDS:
            return None, f"{label}: a {stored.type.value} value into a text field"
    elif target.type in _NUMBER_KINDS:
        if stored.type not in _NUMBER_KINDS:
            return None, f"{label}: a {stored.type.value} value into a number field"
        if (stored.scale or 0) > (target.scale or 0):
            return None, f"{label}: {stored.scale} decimals into {target.scale} would round"
    elif stored.type is not target.type:
        return None, f"{label}: a {stored.type.value} value into a {target.type.value} field"
    return Step(tuple(lookups), stored), None


def order_lines(conn: sa.Connection, sqlite: bool, analyze: Callable[[sa.Connection, str], None]
                ) -> tuple[str, str, str, str, int]:
    """Number the staged lines before they are written, on narrow rows
    (sorting the wide rows cost more than the insert itself): each line's
    position in its invoice (record id order) and its number in the
    batch (the lines before its group, ``g.off``, plus its position).
    Returns the SQL, over ``mb_set_ord o`` and ``mb_set_grp g``, of the
    number (``rn``), of the position, of the order to insert in and of
    a condition every line must meet, and the number of lines
    (``analyze``: the caller's ANALYZE of a temporary table, PostgreSQL only).

    PostgreSQL: ``ROW_NUMBER()`` per group. SQLite: its window functions
    cost three times a plain sort, so the lines are inserted sorted by
    (group, record id) into a table whose rowid ``seq`` counts them in
    that order; a group's lines then hold ``seq`` from ``g.first`` to
    ``g.first + g.cnt - 1`` (``first`` and ``cnt`` from the staged
    totals, groups in number order) and a line's position is
    ``seq - g.first + 1``. The insert takes only lines inside their
    group's range and must write them all: as the ranges are disjoint
    and as long as the groups' counts add up to the lines, that holds
    only when every group's lines fill exactly its range. Within a
    group the order of ``seq`` is the sort's: SQLite inserts the rows of
    an INSERT ... SELECT ... ORDER BY in that order, each new rowid one
    above the largest (the differential tests compare every position)."""
    if not sqlite:
        ordered = conn.exec_driver_sql(
            f"INSERT INTO {ORD} (rn, rec, pos) SELECT g.off + ROW_NUMBER() OVER (PARTITION BY s.grp ORDER BY l.rec), "
            f"l.rec, ROW_NUMBER() OVER (PARTITION BY s.grp ORDER BY l.rec) "
            f"FROM {LINE} l JOIN {SRC} s ON s.record_id = l.hdr JOIN {GRP} g ON g.grp = s.grp").rowcount
        analyze(conn, ORD)
        return "o.rn", "o.pos", "o.rn", "", ordered
    ordered = conn.exec_driver_sql(
        f"INSERT INTO {ORD} (grp, rec) SELECT s.grp, l.rec FROM {LINE} l JOIN {SRC} s ON s.record_id = l.hdr "
        f"ORDER BY s.grp, l.rec").rowcount
    counted = conn.exec_driver_sql(f"SELECT SUM(cnt) FROM {GRP}").scalar()
    if counted != ordered:
        raise InvariantError(f"{ordered} lines staged, {counted} counted")
    return ("(g.off + o.seq - g.first + 1)", "(o.seq - g.first + 1)", "o.seq",
            "o.seq >= g.first AND o.seq < g.first + g.cnt", ordered)
