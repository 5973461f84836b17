"""The subscription build: closed-won opportunities become subscriptions.

A Filter of use case ``SubscriptionBuilder`` names a header object (its
``Target``, e.g. Opportunity), the child relationship whose records become
items (``ChildRelation``, e.g. OpportunityLineItems), a condition, and a
transactional suffix for its controlling fields, like a parent-child invoice
run. Controlling fields on the header (with the suffix before ``__c``):

* ``ON_Account`` (text or lookup): the subscription's account, by id or
  external id, as the invoice run resolves it;
* ``ON_Subscription`` (lookup to Subscription, written back): the subscription
  built; records that have one are done;
* ``ON_SubscriptionBuildError`` (text, written back): why the record could not
  be built, cleared once it is;
* ``ON_MasterSubscription`` (optional, text or lookup): an existing subscription
  (id or SubscriptionKey) the record's items are added to instead (upgrades
  and reorders); the record then points to that subscription.

Every other ``ON_X__c`` field of the header is copied to the subscription's
``ON_X__c``, else ``X__c``, else ``X`` (``ON_StartDate__c`` -> StartDate,
seed 004's ``ON_BuCode__c`` -> ``ON_BuCode__c``), and every ``ON_X__c`` of a
child to the item's field the same way (``ON_Title__c`` -> Title,
``ON_UnitPrice__c`` -> UnitPrice).

**Idempotent and resumable.** Each header record is built in a savepoint of
its batch's transaction and marked done by a conditional write-back
(``ON_Subscription`` set only where it is still empty): a record built by a
concurrent build meanwhile is rolled back here, never built twice, and a
build that stopped is resumed by running it again (the records done are not
selected any more). A dry run is the same code rolled back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Sequence

import sqlalchemy as sa

from engine.config.formula import FormulaEvaluationError
from engine.config.model import FieldDef, ObjectDef, SettingRecord
from engine.config.values import ValueProblem, coerce
from engine.domain.batching import chunks
from engine.domain.errors import EngineError, Where
from engine.domain.naming import controlling_name, copy_incompatibility, on_copy_target
from engine.domain.values import field_paths, read_value
from engine.storage.bulk import RowWriter, update_by_id
from engine.storage.context import Context
from engine.storage.db import unit_of_work
from engine.storage.reader import RecordReader
from engine.storage.retry import run_in_transaction
from engine.storage.types import TextTooLong, ValueOutOfRange

from .accounts import AccountCache
from .condition import Condition
from .condition.sql import compile_condition
from .plan import filter_condition
from .report import RecordFailure
from .subscription_checks import controlling_fields
from .writing import ERROR_LENGTH, ID_CHUNK

BUILDER_USE_CASE = "SubscriptionBuilder"
#: The header's controlling fields (base names), required ones first.
BUILD_REQUIRED = ("ON_Account", "ON_Subscription", "ON_SubscriptionBuildError")
BUILD_OPTIONAL = ("ON_MasterSubscription",)
BUILD_CONTROLS = BUILD_REQUIRED + BUILD_OPTIONAL
#: Fields a subscription / an item must get from its source.
SUBSCRIPTION_NEEDS = ("StartDate",)
ITEM_NEEDS = ("Title", "UnitPrice")


class SubscriptionBuildError(EngineError, ValueError):
    """A subscription build cannot start: an unknown filter, one that is not a
    SubscriptionBuilder filter, or one whose controlling fields are missing."""

    code = "R222"


class RecordsNotBuilt(EngineError):
    """Some records of a subscription build could not be built (one problem
    per record; the reason is also in its ON_SubscriptionBuildError); the
    others were. Fix them and build again: only they are selected."""

    code = "R223"


class _Unbuildable(Exception):
    """A header record that cannot become a subscription (its error message)."""


@dataclass(frozen=True)
class BuildPlan:
    record: SettingRecord
    header: ObjectDef
    child: ObjectDef
    child_lookup: FieldDef
    controls: dict[str, FieldDef]
    header_copies: tuple[tuple[FieldDef, FieldDef], ...]
    item_copies: tuple[tuple[FieldDef, FieldDef], ...]
    condition: Condition | None

    @property
    def name(self) -> str:
        return self.record.name


@dataclass
class BuildReport:
    """What a build did: subscriptions created, items added, records failed."""

    dry_run: bool = False
    records_read: int = 0
    subscriptions: int = 0
    items: int = 0
    extended: int = 0  # records whose items went onto a master subscription
    failures: list[RecordFailure] = field(default_factory=list)
    built: list[tuple[int, int]] = field(default_factory=list)  # (source record, subscription)

    def failure_error(self) -> RecordsNotBuilt | None:
        """The error the build ends with: None when every record was built."""
        if not self.failures:
            return None
        return RecordsNotBuilt(f"{len(self.failures)} record(s) could not be built into subscriptions",
                               problems=[f.problem for f in self.failures], partly_done=bool(self.built))


def plan_build(ctx: Context, name: str) -> BuildPlan:
    """Bind a SubscriptionBuilder filter to the metadata; :class:`SubscriptionBuildError` when it cannot run."""
    record = ctx.model.setting_record("Filter", name)
    where = Where(object="Filter", record=name)
    if record is None:
        raise SubscriptionBuildError(f"unknown filter '{name}'", where=where)
    if record.get("UseCase") != BUILDER_USE_CASE:
        raise SubscriptionBuildError(f"filter '{name}' is not a {BUILDER_USE_CASE} filter", where=where)
    header = ctx.model.object(str(record.get("Target") or ""))
    if header is None or header.is_setting:
        raise SubscriptionBuildError(f"filter '{name}': unknown target '{record.get('Target')}'", where=where)
    relation = header.child_relationship(str(record.get("ChildRelation") or ""))
    if relation is None:
        raise SubscriptionBuildError(f"filter '{name}': {header.name} has no child relationship "
                                     f"'{record.get('ChildRelation')}'", where=where)
    child = ctx.model.require(relation.child_object)
    suffix = str(record.get("TransactionalSuffix") or "")
    controls = controlling_fields(header, suffix, ((base, base in BUILD_REQUIRED) for base in BUILD_CONTROLS),
                                  lambda missing: SubscriptionBuildError(
                                      f"filter '{name}': {header.name} has no {missing}", where=where,
                                      hint="validate-config names every missing field (E232)"))
    condition = filter_condition(record, header, ctx.model, lambda message: SubscriptionBuildError(message, where=where))
    skip = {controlling_name(base, suffix).lower() for base in BUILD_CONTROLS}
    return BuildPlan(record, header, child, child.field(relation.field_name),  # type: ignore[arg-type]
                     controls, tuple(build_copies(header, ctx.obj("Subscription"), suffix, skip)),
                     tuple(build_copies(child, ctx.obj("SubscriptionItem"), suffix, set())), condition)


def build_copies(source: ObjectDef, target: ObjectDef, suffix: str, skip: set[str]) -> list[tuple[FieldDef, FieldDef]]:
    """The ON fields of ``source`` (with the filter's suffix, when it has one)
    and the ``target`` fields they are copied to."""
    out = []
    for fdef in source.fields:
        name = fdef.name.lower()
        if not name.startswith("on_") or not fdef.is_custom or name in skip:
            continue
        if suffix and not name[:-3].endswith(suffix.lower()):
            continue
        dest = on_copy_target(fdef.name, suffix, target)
        if dest is not None and copy_incompatibility(fdef, dest) is None:
            out.append((fdef, dest))
    return out


def build_subscriptions(engine: sa.Engine, ctx: Context, filter_name: str, *, dry_run: bool = False,
                        today: date | None = None, batch_size: int = 500) -> BuildReport:
    """Build the subscriptions of the filter's unbuilt records (see the module docstring)."""
    plan = plan_build(ctx, filter_name)
    today = today or date.today()
    builder = _Builder(ctx, plan, today, engine.dialect.name)
    report = BuildReport(dry_run=dry_run)
    if dry_run:
        with unit_of_work(engine, dry_run=True) as conn:
            ids = builder.select(conn)
            report.records_read = len(ids)
            for batch in chunks(ids, batch_size):
                builder.batch(conn, batch, report)
        return report
    with engine.connect() as conn:
        ids = builder.select(conn)
    report.records_read = len(ids)
    for batch in chunks(ids, batch_size):
        part = run_in_transaction(engine, lambda conn: builder.batch(conn, batch, BuildReport()))
        report.subscriptions += part.subscriptions
        report.items += part.items
        report.extended += part.extended
        report.failures.extend(part.failures)
        report.built.extend(part.built)
    return report


class _Builder:
    def __init__(self, ctx: Context, plan: BuildPlan, today: date, dialect: str):
        self.ctx = ctx
        self.plan = plan
        self.today = today
        self.table = ctx.table(plan.header.name)
        self.child_table = ctx.table(plan.child.name)
        self.accounts = AccountCache(ctx, today)
        paths: set[tuple[str, ...]] = set()
        for fdef in list(plan.controls.values()) + [s for s, _ in plan.header_copies]:
            paths |= field_paths(fdef)
        self.reader = RecordReader.of(ctx, plan.header, paths, dialect, all_fields=False)
        child_paths: set[tuple[str, ...]] = {(plan.child_lookup.key,)}
        for source, _ in plan.item_copies:
            child_paths |= field_paths(source)
        self.child_reader = RecordReader.of(ctx, plan.child, child_paths, dialect, all_fields=False)
        self.sub_obj = ctx.obj("Subscription")
        self.item_obj = ctx.obj("SubscriptionItem")

    def _open(self) -> sa.ColumnElement[bool]:
        return self.table.c[self.plan.controls["ON_Subscription"].column_name].is_(None)

    def select(self, conn: sa.Connection) -> list[int]:
        where = self._open()
        if self.plan.condition is not None:
            condition, source = compile_condition(self.plan.condition, self.ctx, self.table, today=self.today)
            where = sa.and_(where, self.table.c.id.in_(
                sa.select(self.table.c.id).select_from(source).where(condition).scalar_subquery()))
        return list(conn.execute(sa.select(self.table.c.id).where(where).order_by(self.table.c.id)).scalars())

    def batch(self, conn: sa.Connection, ids: Sequence[int], report: BuildReport) -> BuildReport:
        headers = list(self.reader.read(conn, where=sa.and_(self.table.c.id.in_(ids), self._open()),
                                         order_by=[self.table.c.id]))
        children: dict[int, list[dict]] = {}
        fk = self.child_table.c[self.plan.child_lookup.column_name]
        for chunk in chunks([h["id"] for h in headers], ID_CHUNK):
            for child in self.child_reader.read(conn, where=fk.in_(chunk), order_by=[fk, self.child_table.c.id]):
                parent = child.get(self.plan.child_lookup.key)
                children.setdefault(parent.get("id") if isinstance(parent, dict) else parent, []).append(child)
        errors: list[tuple[int, str]] = []
        for header in headers:
            savepoint = conn.begin_nested()
            try:
                outcome = self._one(conn, header, children.get(header["id"], []))
            except (_Unbuildable, FormulaEvaluationError, ValueProblem, ValueOutOfRange, TextTooLong) as error:
                savepoint.rollback()
                errors.append((header["id"], str(error)[:ERROR_LENGTH]))
                continue
            if outcome is None:  # built by a concurrent build meanwhile
                savepoint.rollback()
                continue
            savepoint.commit()
            subscription_id, items, extended = outcome
            report.built.append((header["id"], subscription_id))
            report.items += items
            report.extended += extended
            report.subscriptions += 0 if extended else 1
        if errors:
            error_field = self.plan.controls["ON_SubscriptionBuildError"]
            update_by_id(conn, self.plan.header, [error_field.name], [(i, (m,)) for i, m in errors])
            report.failures.extend(RecordFailure(self.plan.header.name, i, m) for i, m in errors)
        return report

    def _value(self, base: str, record: dict) -> object:
        fdef = self.plan.controls.get(base)
        value = read_value(fdef, record, self.today) if fdef is not None else None
        return None if value == "" else value

    def _one(self, conn: sa.Connection, header: dict, children: list[dict]) -> tuple[int, int, bool] | None:
        if not children:
            raise _Unbuildable(f"{self.plan.header.name} {header['id']} has no {self.plan.child.name} records")
        items = [self._copies(self.plan.item_copies, child) for child in children]
        for values, child in zip(items, children):
            missing = [n for n in ITEM_NEEDS if values.get(n.lower()) in (None, "")]
            if missing:
                raise _Unbuildable(f"{self.plan.child.name} {child['id']}: no {', '.join(missing)} "
                                   f"(give it ON_{missing[0]}__c)")
        master = self._value("ON_MasterSubscription", header)
        if master is not None:
            subscription_id = self._master(conn, master)
            extended = True
        else:
            raw = self._value("ON_Account", header)
            account_id = self.accounts.resolve(conn, raw)
            if account_id is None:
                raise _Unbuildable(f"no account with id or {self.accounts.external_field} '{raw}'"
                                   if raw is not None else f"{self.plan.controls['ON_Account'].name} is empty")
            values = self._copies(self.plan.header_copies, header)
            values["account"] = account_id
            values.setdefault("status", "Active")
            missing = [n for n in SUBSCRIPTION_NEEDS if values.get(n.lower()) in (None, "")]
            if missing:
                raise _Unbuildable(f"no {', '.join(missing)} for the subscription (give it ON_{missing[0]}__c)")
            RowWriter(conn, self.sub_obj).insert([values])
            subscription_id = values["id"]
            extended = False
        for values in items:
            values["subscription"] = subscription_id
        RowWriter(conn, self.item_obj).insert(items)
        control = self.plan.controls["ON_Subscription"]
        error = self.plan.controls["ON_SubscriptionBuildError"]
        done = conn.execute(
            sa.update(self.table).where(self.table.c.id == header["id"], self.table.c[control.column_name].is_(None))
            .values({control.column_name: subscription_id, error.column_name: None}))
        if done.rowcount != 1:
            return None
        return subscription_id, len(items), extended

    def _master(self, conn: sa.Connection, master: object) -> int:
        table = self.ctx.table("Subscription")
        text = str(master.get("id") if isinstance(master, dict) else master).strip()
        key = table.c[self.sub_obj.field("SubscriptionKey").column_name]  # type: ignore[union-attr]
        query = sa.select(table.c.id).where(key == text)
        if text.isdigit() and text.isascii():
            query = sa.select(table.c.id).where(sa.or_(table.c.id == int(text), key == text)).order_by(table.c.id)
        found = conn.execute(query).first()
        if found is None:
            raise _Unbuildable(f"no master subscription with id or SubscriptionKey '{text}'")
        return found[0]

    def _copies(self, plan: Sequence[tuple[FieldDef, FieldDef]], record: dict) -> dict:
        out: dict = {}
        for source, target in plan:
            value = read_value(source, record, self.today)
            if value not in (None, ""):
                out[target.key] = coerce(target, value)
        return out
