"""The accounts an invoice run bills: ``ON_Account`` values resolved to
account records, with the account's ON fields copied to the invoice header.

An ``ON_Account`` value names an account by record id first, then by its
external id (the Global Settings' AccountExternalIdField, AccountNumber by
default; the lowest id wins when it is not unique), domain-spec §3.2.
:class:`AccountFields` is what the model says about accounts (a service of
the runtime context); :class:`AccountCache` is one run's resolutions and
account records, read in bulk.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Iterable, Sequence

import sqlalchemy as sa

from engine.config.formula import FormulaEvaluationError
from engine.config.model import FieldDef, FieldType
from engine.config.values import ValueProblem, coerce
from engine.domain.batching import chunks
from engine.domain.naming import on_copy_target
from engine.domain.values import read_value
from engine.storage.context import Context
from engine.storage.reader import RecordReader

from .build import ACCOUNT_TO_INVOICE

#: Ids per ``IN (...)`` list.
ID_CHUNK = 500


class AccountFields:
    """What the run reads of accounts, from the model (``ctx.service(AccountFields)``):
    the external id field, and the account's ON fields copied to the invoice
    header with their targets."""

    def __init__(self, ctx: Context):
        self.obj = ctx.obj("Account")
        self.table = ctx.table("Account")
        external = self.obj.field(ctx.settings.account_external_id_field)
        #: The field named in messages ("no account with id or AccountNumber 'x'").
        self.external_field = external.name if external else "AccountNumber"
        self.external: FieldDef | None = external
        invoice = ctx.obj("Invoice")
        self.copy_plan: list[tuple[FieldDef, FieldDef]] = []
        for fdef in self.obj.fields:
            if fdef.is_custom and fdef.name.lower().startswith("on_"):
                target = on_copy_target(fdef.name, "", invoice)
                if target is not None and target.type not in (FieldType.FORMULA, FieldType.AUTONUMBER) and not target.system:
                    self.copy_plan.append((fdef, target))

    def reader_paths(self) -> set[tuple[str, ...]]:
        """The record paths the copied fields' formulas read."""
        paths: set[tuple[str, ...]] = set()
        for fdef, _ in self.copy_plan:
            if fdef.formula is not None and fdef.formula.compiled is not None:
                paths |= set(fdef.formula.compiled.references)
        return paths

    def record_paths(self) -> set[tuple[str, ...]]:
        """What the runs read of an account record, and nothing else: the
        copied ON fields (stored, or their formulas' paths), the address and
        currency data copied to the invoice (``build.ACCOUNT_TO_INVOICE``),
        the currency the header falls back on and the external id. Reading
        every column cost about twice as much per account (issue 19)."""
        paths = self.reader_paths()
        names = [source for _, source in ACCOUNT_TO_INVOICE] + ["currencyisocode"]
        names += [fdef.key for fdef, _ in self.copy_plan if fdef.formula is None]
        if self.external is not None:
            names.append(self.external.key)
        for name in names:
            fdef = self.obj.field(name)
            if fdef is not None and fdef.is_stored:
                paths.add((fdef.key,))
        return paths


class AccountCache:
    """One run's ``ON_Account`` resolutions and the account records with
    their ON field copies for the invoice header (read once per account)."""

    def __init__(self, ctx: Context, today: date):
        self.ctx = ctx
        self.today = today
        self.fields = fields = ctx.service(AccountFields)
        self.obj = fields.obj
        self.table = fields.table
        self.external = fields.external
        self.external_field = fields.external_field
        self._reader: RecordReader | None = None
        self._records: dict[int, dict] = {}
        self._copies: dict[int, dict] = {}
        self._refs: dict[object, int | None] = {}
        self._steps: list[tuple[FieldDef, str | None, FieldDef, str]] | None = None

    def resolve(self, conn: sa.Connection, raw: object) -> int | None:
        """The account id an ``ON_Account`` value names, or None."""
        if raw in (None, ""):
            return None
        if isinstance(raw, dict):
            raw = raw.get("id")
        if raw in self._refs:
            return self._refs[raw]
        found: int | None = None
        text = str(raw).strip()
        # The record id first, then the external id (domain-spec 3.2).
        if text.isdigit() and text.isascii():
            row = conn.execute(sa.select(self.table.c.id).where(self.table.c.id == int(text))).first()
            found = row.id if row else None
        if found is None and self.external is not None and not isinstance(raw, int):
            column = self.table.c[self.external.column_name]
            row = conn.execute(sa.select(self.table.c.id).where(column == text).order_by(self.table.c.id)).first()
            found = row.id if row else None
        if found is not None and found not in self._records:
            self._load_many(conn, [found])
        self._refs[raw] = found
        return found

    def prefetch(self, conn: sa.Connection, raws: Iterable[object]) -> None:
        """Resolve many ON_Account values at once, exactly as :meth:`resolve`
        would one by one (the record id first, then the external id, the
        lowest id if it is not unique), but with one query per lookup kind
        and chunk of values instead of up to three queries per account.
        :meth:`resolve` then answers from its cache; values this method does
        not handle (unusual types, a non-text external id field) are left to
        it."""
        pending: dict[object, str] = {}
        for raw in raws:
            if raw in (None, ""):
                continue
            if isinstance(raw, dict):
                raw = raw.get("id")
            if not isinstance(raw, (str, int, Decimal)) or isinstance(raw, bool):
                continue
            if raw not in self._refs and raw not in pending:
                pending[raw] = str(raw).strip()
        if not pending:
            return
        found: dict[object, int | None] = dict.fromkeys(pending)
        # Record ids first (domain-spec 3.2) ...
        numbers = {raw: int(text) for raw, text in pending.items() if text.isdigit() and text.isascii()}
        existing: set[int] = set()
        for chunk in chunks(sorted(set(numbers.values())), ID_CHUNK):
            existing.update(conn.execute(sa.select(self.table.c.id).where(self.table.c.id.in_(chunk))).scalars())
        for raw, number in numbers.items():
            if number in existing:
                found[raw] = number
        # ... then the external id, for what is not a record id.
        if self.external is not None:
            if self.external.type not in (FieldType.TEXT, FieldType.AUTONUMBER):
                return
            column = self.table.c[self.external.column_name]
            texts = sorted({text for raw, text in pending.items() if not isinstance(raw, int) and found[raw] is None})
            by_text: dict[str, int] = {}
            for chunk in chunks(texts, ID_CHUNK):  # type: ignore[arg-type]
                query = sa.select(self.table.c.id, column).where(column.in_(chunk)).order_by(self.table.c.id)
                for account_id, value in conn.execute(query):
                    by_text.setdefault(value, account_id)
            for raw, text in pending.items():
                if not isinstance(raw, int) and found[raw] is None:
                    found[raw] = by_text.get(text)
        for raw, text in pending.items():
            if found[raw] is None and text.isdigit() and not text.isascii():
                del found[raw]  # int() of non-ASCII digits: resolve() shows what happens
        self._load_many(conn, sorted({i for i in found.values() if i is not None and i not in self._records}))
        self._refs.update(found)

    def _load_many(self, conn: sa.Connection, account_ids: Sequence[int]) -> None:
        if self._reader is None:
            self._reader = RecordReader(self.ctx.model, self.ctx.metadata, self.obj, self.fields.record_paths(),
                                        conn.dialect.name, all_fields=False)
        for chunk in chunks(account_ids, ID_CHUNK):
            for record in self._reader.read(conn, where=self.table.c.id.in_(chunk)):
                self._remember(record)

    def _remember(self, record: dict) -> None:
        """Cache an account record and its ON field copies for the invoice."""
        account_id = record["id"]
        self._records[account_id] = record
        copies = {}
        for source, stored, target, target_key in self._copy_steps():
            try:
                if stored is not None:  # read_value of a stored field, without the call
                    value = record.get(stored)
                    if isinstance(value, dict):  # a lookup named like its relationship
                        value = value.get("id")
                else:
                    value = read_value(source, record, self.today)
                # Blank by type (``value in (None, "")`` on a Decimal goes through an ABC check).
                if value is not None and not (isinstance(value, str) and not value):
                    copies[target_key] = coerce(target, value)
            except (FormulaEvaluationError, ValueProblem):
                continue
        self._copies[account_id] = copies

    def _copy_steps(self) -> list[tuple[FieldDef, str | None, FieldDef, str]]:
        """The copy plan with its keys worked out once per run (every account
        record of the run walks it): (source, its key when it is a stored
        field, else None, target, target key)."""
        if self._steps is None:
            self._steps = [(source, source.key if source.formula is None else None, target, target.key)
                           for source, target in self.fields.copy_plan]
        return self._steps

    def record(self, account_id: int) -> dict:
        return self._records[account_id]

    def __len__(self) -> int:
        """The account records cached."""
        return len(self._records)

    def forget(self) -> None:
        """Empty the cache (a long run bounds its memory so); what is needed
        again is read again by :meth:`prefetch`, :meth:`resolve` or :meth:`load`."""
        self._records.clear()
        self._copies.clear()
        self._refs.clear()

    def load(self, conn: sa.Connection, account_ids: Iterable[int]) -> None:
        """Make sure the records of ``account_ids`` are cached."""
        self._load_many(conn, sorted({i for i in account_ids if i not in self._records}))

    def copies(self, account_id: int) -> dict:
        return self._copies.get(account_id, {})
