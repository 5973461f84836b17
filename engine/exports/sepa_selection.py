"""What a SEPA export pays: the orders of one business entity, each checked.

:func:`select_orders` fills a :class:`~engine.exports.sepa_orders.SepaReport`
with the payment orders of its kind and with everything it leaves out:

* invoices (direct debits and credit transfers): open, of the entity (the
  default entity also owns invoices naming none), a SEPA payment method, a
  positive (debit) or negative (credit) balance. An invoice whose history
  holds a locked export of the same setting and effective due date is
  ``already_exported`` unless the export is forced; a direct debit due later
  than :data:`~engine.exports.sepa_orders.DUE_WINDOW_DAYS` days after the
  collection (or export) date is ``not_due``;
* free balances (:data:`~engine.exports.sepa_orders.BALANCES`): Payment and
  Prepayment credits without an invoice, not locked, not drafts, not from
  Cash Management, of accounts of the entity;
* an order whose bank data, mandate, currency or reference cannot go into a
  SEPA message is ``rejected`` with every reason, never dropped silently.

:func:`lock_candidates` serializes concurrent exports on PostgreSQL before
anything is selected.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any, Mapping

import sqlalchemy as sa

from engine.domain.money import CENT
from engine.storage.context import Context

from .sepa_orders import (
    ACCOUNT_BIC,
    ACCOUNT_ENTITY,
    ACCOUNT_IBAN,
    ACCOUNT_OWNER,
    BALANCE_TYPES,
    BALANCES,
    CASH_MANAGEMENT_ORIGIN,
    CURRENCY,
    DEBIT,
    DUE_WINDOW_DAYS,
    ID_LENGTH,
    NAME_LENGTH,
    SEPA_METHODS,
    SEQUENCE_TYPES,
    Rejected,
    SepaReport,
    SepaSetting,
    Transaction,
)
from .sepa_parties import check_bic, check_iban, default_entity, remittance_text
from .sepa_xml import PAIN_008, is_sepa_text, sepa_text


def select_orders(conn: sa.Connection, ctx: Context, report: SepaReport, *, when: date | None, today: date,
                  force: bool) -> None:
    """The orders of ``report.kind`` for ``report.creditor.entity``, into
    ``report``. ``when`` is the requested collection or execution date;
    ``today`` the export date."""
    if report.kind == BALANCES:
        select_balances(conn, ctx, report, when or today)
    else:
        select_invoices(conn, ctx, report, when=when, today=today, force=force)


# ---------------------------------------------------------------------------
# Invoices


def effective_due(invoice: sa.Table) -> sa.ColumnElement:
    """The effective due date: the next installment's, else the invoice's."""
    return sa.func.coalesce(invoice.c.nextpaymentduedate, invoice.c.paymentduedate)


def invoice_conditions(ctx: Context, invoice: sa.Table, *, entity: str, debit: bool) -> list:
    """Open invoices of ``entity`` with a SEPA payment method and a positive
    (debit) or negative (credit) balance."""
    entity_match = invoice.c.businessentity == entity
    if default_entity(ctx) == entity:
        entity_match = sa.or_(entity_match, invoice.c.businessentity.is_(None))
    return [invoice.c.status == "Open", entity_match, invoice.c.paymentmethod.in_(SEPA_METHODS),
            invoice.c.balance > 0 if debit else invoice.c.balance < 0]


def invoice_query(ctx: Context, *, entity: str, debit: bool, setting: SepaSetting) -> sa.Select:
    """The candidate invoices with their effective due date (``_due``) and
    whether a locked export of ``setting`` covers that due date (``_locked``),
    ordered by number."""
    invoice, history = ctx.table("Invoice"), ctx.table("InvoiceExportHistory")
    due = effective_due(invoice)
    locked = sa.exists().where(
        history.c.invoice == invoice.c.id,
        history.c.locked == sa.true(),
        history.c.exportsetting == setting.name,
        sa.or_(history.c.nextpaymentduedate == due, sa.and_(history.c.nextpaymentduedate.is_(None), due.is_(None))),
    )
    return (
        sa.select(invoice, due.label("_due"), locked.label("_locked"))
        .where(*invoice_conditions(ctx, invoice, entity=entity, debit=debit))
        .order_by(invoice.c.name, invoice.c.id)
    )


def lock_candidates(conn: sa.Connection, ctx: Context, kind: str, entity: str) -> None:
    """On PostgreSQL, lock the rows an export may record (``FOR UPDATE``)
    before selecting them: a concurrent export of the same rows waits until
    this one commits, and its following SELECT (a new snapshot under READ
    COMMITTED) then sees the export history and locks written here, so
    nothing is exported twice. SQLite needs no such step: its write
    transactions (``BEGIN IMMEDIATE``) run one at a time."""
    if conn.dialect.name != "postgresql":
        return
    if kind == BALANCES:
        balance = ctx.table("Balance")
        query = sa.select(balance.c.id).where(
            balance.c.invoice.is_(None), balance.c.type.in_(BALANCE_TYPES), balance.c.lockedreason.is_(None))
    else:
        invoice = ctx.table("Invoice")
        query = sa.select(invoice.c.id).where(*invoice_conditions(ctx, invoice, entity=entity, debit=kind == DEBIT))
    conn.execute(query.with_for_update()).all()


def used_mandates(conn: sa.Connection, ctx: Context) -> set[tuple[int, str]]:
    """(account, mandate reference) pairs already collected by an earlier direct debit export."""
    invoice, history = ctx.table("Invoice"), ctx.table("InvoiceExportHistory")
    query = (
        sa.select(invoice.c.account, invoice.c.directdebitmandatereference).distinct()
        .join(history, history.c.invoice == invoice.c.id)
        .where(history.c.exportformat == PAIN_008, invoice.c.directdebitmandatereference.is_not(None))
    )
    return {(int(a), str(m)) for a, m in conn.execute(query)}


def sequence_type(given: object, used: bool) -> str:
    """The invoice's sequence type as recorded, except that a recorded FRST
    becomes RCUR once the mandate was collected by an earlier export; when
    none is recorded: FRST for the first collection under the mandate, RCUR
    afterwards (docs/decisions.md, "SEPA exports")."""
    text = str(given or "").strip()
    if text in ("RCUR", "OOFF", "FNAL"):
        return text
    return "RCUR" if used else "FRST"


def select_invoices(conn: sa.Connection, ctx: Context, report: SepaReport, *, when: date | None, today: date,
                    force: bool) -> None:
    """Direct debits or credit transfers of the entity's open SEPA invoices.
    A direct debit is collected on ``when``, else on its due date but not
    before ``today``; a credit transfer is executed on ``when``, else today."""
    debit = report.kind == DEBIT
    setting = report.setting
    used = used_mandates(conn, ctx) if debit else set()
    horizon = (when or today) + timedelta(days=DUE_WINDOW_DAYS)
    query = invoice_query(ctx, entity=report.creditor.entity, debit=debit, setting=setting)
    for row in conn.execute(query).mappings():
        forced = bool(row["_locked"])
        if forced and not force:
            report.already_exported.append(str(row["name"]))
            continue
        due: date | None = row["_due"]
        if debit:
            if due is not None and due > horizon:
                report.not_due.append(str(row["name"]))
                continue
            result = debit_order(row, when=when or max(due or today, today), used=used, setting=setting,
                                 forced=forced)
        else:
            result = credit_order(row, when=when or today, setting=setting, forced=forced)
        if isinstance(result, str):
            report.rejected.append(Rejected(int(row["id"]), str(row["name"]), row.get("accountname"),
                                            Decimal(row["balance"]), result))
        else:
            report.transactions.append(result)


def party_problems(row: Mapping[str, Any]) -> tuple[list[str], str | None, str | None, str]:
    """Problems with the invoice's bank data, and its IBAN, BIC and holder."""
    problems: list[str] = []
    iban, problem = check_iban(row.get("bankaccount"), "IBAN (BankAccount)")
    if problem:
        problems.append(problem)
    bic, problem = check_bic(row.get("bankcode"), "BIC (BankCode)")
    if problem:
        problems.append(problem)
    holder = sepa_text(row.get("bankaccountowner"), NAME_LENGTH)
    if not holder:
        problems.append("account holder (BankAccountOwner) is empty")
    currency = row.get("currencyisocode") or CURRENCY
    if currency != CURRENCY:
        problems.append(f"currency {currency}: SEPA payments are in EUR only")
    name = str(row.get("name") or "")
    if not is_sepa_text(name, ID_LENGTH):
        problems.append(f"invoice number {name!r} cannot be the EndToEndId (at most {ID_LENGTH} SEPA characters)")
    return problems, iban, bic, holder


def debit_order(row: Mapping[str, Any], *, when: date, used: set[tuple[int, str]], setting: SepaSetting,
                forced: bool) -> Transaction | str:
    """The direct debit of an invoice, or the reason it cannot be made."""
    problems, iban, bic, holder = party_problems(row)
    mandate = str(row.get("directdebitmandatereference") or "").strip()
    if not mandate:
        problems.append("mandate reference (DirectDebitMandateReference) is empty")
    elif not is_sepa_text(mandate, ID_LENGTH):
        problems.append(f"mandate reference {mandate!r} is not at most {ID_LENGTH} characters of "
                        "A-Z a-z 0-9 / - ? : ( ) . , ' + and space")
    signed = row.get("directdebitmandategranted")
    if signed is None:
        problems.append("mandate signature date (DirectDebitMandateGranted) is empty")
    elif signed > when:
        problems.append(f"mandate signature date {signed} is after the collection date {when}")
    given = row.get("directdebitsequencetype")
    if given not in (None, "") and given not in SEQUENCE_TYPES:
        problems.append(f"sequence type {given!r} is not one of {', '.join(SEQUENCE_TYPES)}")
    if problems:
        return "; ".join(problems)
    assert iban is not None
    return Transaction(
        record_id=int(row["id"]), record_name=str(row["name"]), end_to_end_id=str(row["name"]),
        account=int(row["account"]), account_name=row.get("accountname"),
        amount=Decimal(row["balance"]).quantize(CENT), currency=CURRENCY, when=when,
        iban=iban, bic=bic, holder=holder, remittance=remittance_text(setting.reference_text, row),
        due_date=row.get("_due"), sequence_type=sequence_type(given, (int(row["account"]), mandate) in used),
        mandate_id=mandate, mandate_date=signed, forced=forced,
    )


def credit_order(row: Mapping[str, Any], *, when: date, setting: SepaSetting, forced: bool) -> Transaction | str:
    """The credit transfer paying out an invoice's negative open balance, or
    the reason it cannot be made."""
    problems, iban, bic, holder = party_problems(row)
    if problems:
        return "; ".join(problems)
    assert iban is not None
    return Transaction(
        record_id=int(row["id"]), record_name=str(row["name"]), end_to_end_id=str(row["name"]),
        account=int(row["account"]), account_name=row.get("accountname"),
        amount=(-Decimal(row["balance"])).quantize(CENT), currency=CURRENCY, when=when,
        iban=iban, bic=bic, holder=holder, remittance=remittance_text(setting.reference_text, row),
        due_date=row.get("_due"), forced=forced,
    )


# ---------------------------------------------------------------------------
# Free balances


def select_balances(conn: sa.Connection, ctx: Context, report: SepaReport, when: date) -> None:
    """The free Payment/Prepayment credits of the entity's accounts that are
    not locked, not drafts and not from Cash Management, paid out on ``when``
    to the account's bank account."""
    balance, account = ctx.table("Balance"), ctx.table("Account")
    account_obj = ctx.obj("Account")

    def column(name: str) -> sa.ColumnElement:
        fdef = account_obj.field(name)
        if fdef is None or not fdef.is_stored:
            return sa.literal(None).label(f"_{name.lower()}")
        return account.c[fdef.key].label(f"_{name.lower()}")

    entity_column = account_obj.field(ACCOUNT_ENTITY)
    query = (
        sa.select(balance, account.c.name.label("_account_name"), column(ACCOUNT_IBAN), column(ACCOUNT_BIC),
                  column(ACCOUNT_OWNER))
        .join(account, account.c.id == balance.c.account)
        .where(balance.c.invoice.is_(None), balance.c.type.in_(BALANCE_TYPES), balance.c.amount < 0,
               balance.c.lockedreason.is_(None), balance.c.draft.is_not(sa.true()),
               sa.or_(balance.c.origin.is_(None), balance.c.origin != CASH_MANAGEMENT_ORIGIN))
        .order_by(balance.c.name, balance.c.id)
    )
    entity = report.creditor.entity
    if entity_column is not None and entity_column.is_stored:
        match = account.c[entity_column.key] == entity
        if default_entity(ctx) == entity:
            match = sa.or_(match, account.c[entity_column.key].is_(None), account.c[entity_column.key] == "")
        query = query.where(match)
    elif default_entity(ctx) != entity:
        return  # accounts name no entity: their balances belong to the default entity
    for row in conn.execute(query).mappings():
        problems: list[str] = []
        iban, problem = check_iban(row["_" + ACCOUNT_IBAN.lower()], f"account IBAN ({ACCOUNT_IBAN})")
        if problem:
            problems.append(problem)
        bic, problem = check_bic(row["_" + ACCOUNT_BIC.lower()], f"account BIC ({ACCOUNT_BIC})")
        if problem:
            problems.append(problem)
        holder = sepa_text(row["_" + ACCOUNT_OWNER.lower()] or row["_account_name"], NAME_LENGTH)
        if not holder:
            problems.append("account holder is empty")
        currency = row.get("currencyisocode") or CURRENCY
        if currency != CURRENCY:
            problems.append(f"currency {currency}: SEPA payments are in EUR only")
        if problems:
            report.rejected.append(Rejected(int(row["id"]), str(row["name"]), row["_account_name"],
                                            Decimal(row["amount"]), "; ".join(problems)))
            continue
        assert iban is not None
        report.transactions.append(Transaction(
            record_id=int(row["id"]), record_name=str(row["name"]), end_to_end_id=str(row["name"]),
            account=int(row["account"]), account_name=row["_account_name"],
            amount=(-Decimal(row["amount"])).quantize(CENT), currency=CURRENCY, when=when,
            iban=iban, bic=bic, holder=holder, remittance=remittance_text(report.setting.reference_text, row),
        ))
