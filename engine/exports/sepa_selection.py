"""What a SEPA export pays: the orders of one business entity, each checked.

:func:`select_orders` fills a :class:`~engine.exports.sepa_orders.SepaReport`
with the payment orders of its kind and with everything it leaves out:

* invoices (direct debits and credit transfers): open, of the entity (the
  default entity also owns invoices naming none), a SEPA payment method, a
  positive (debit) or negative (credit) balance. An invoice whose history
  holds a locked export of the same setting and effective due date is
  ``already_exported`` unless the export is forced; a direct debit due later
  than :data:`~engine.exports.sepa_orders.DUE_WINDOW_DAYS` days after the
  collection (or export) date is ``not_due``; an invoice with a payment plan
  is collected for its due installments only (:func:`collection`);
* free balances (:data:`~engine.exports.sepa_orders.BALANCES`): Payment and
  Prepayment credits without an invoice, not locked, not drafts, not from
  Cash Management, of accounts of the entity;
* an order whose bank data, mandate, currency or reference cannot go into a
  SEPA message is ``rejected`` with every reason, never dropped silently.

:func:`lock_candidates` serializes concurrent exports on PostgreSQL before
anything is selected.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, Mapping

import sqlalchemy as sa

from engine.booking.balances import free_credits
from engine.domain.batching import chunks
from engine.domain.money import CENT
from engine.domain.target2 import collection_date
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
from .sepa_xml import DEBIT_MESSAGES, is_sepa_text, sepa_text


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
    ordered by number. A collection the bank returned (or rejected) does not
    lock: the invoice is locked while it has more locked exports of the
    setting and due date than returned collections, so a returned direct
    debit is collected again by the same setting without ``--force``."""
    invoice, history = ctx.table("Invoice"), ctx.table("InvoiceExportHistory")
    due = effective_due(invoice)
    exports = sa.select(sa.func.count(history.c.id)).where(
        history.c.invoice == invoice.c.id,
        history.c.locked == sa.true(),
        history.c.exportsetting == setting.name,
        sa.or_(history.c.nextpaymentduedate == due, sa.and_(history.c.nextpaymentduedate.is_(None), due.is_(None))),
    ).scalar_subquery()
    locked = exports > _returned_count(ctx, invoice)
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
    nothing is exported twice; a balance export also locks the balances'
    accounts. SQLite needs no such step: its write transactions
    (``BEGIN IMMEDIATE``) run one at a time."""
    if conn.dialect.name != "postgresql":
        return
    if kind == BALANCES:
        balance, account = ctx.table("Balance"), ctx.table("Account")
        query = sa.select(balance.c.id).where(
            balance.c.invoice.is_(None), balance.c.type.in_(BALANCE_TYPES), balance.c.lockedreason.is_(None))
        conn.execute(query.with_for_update()).all()
        # Their accounts too, in id order: a refund or payment on an account
        # holds its lock while it reads and changes the free credit
        # (cash.payments.lock_account), so the free credits this export reads
        # afterwards (select_balances) are not paid by both.
        conn.execute(sa.select(account.c.id).where(account.c.id.in_(query.with_only_columns(balance.c.account)))
                     .order_by(account.c.id).with_for_update()).all()
        return
    invoice = ctx.table("Invoice")
    query = sa.select(invoice.c.id).where(*invoice_conditions(ctx, invoice, entity=entity, debit=kind == DEBIT))
    conn.execute(query.with_for_update()).all()


def used_mandates(conn: sa.Connection, ctx: Context) -> set[tuple[int, str]]:
    """(account, mandate reference) pairs already collected by an earlier
    direct debit export, not counting collections the bank returned: an
    invoice counts while it was exported more often than a bank statement
    returned its collection (``PaymentEntry.IsReturn``, assigned to the
    invoice by ``metabill bank import``). So a returned first collection
    leaves the mandate unused, and the next collection is FRST again. The
    mandate of an account with a default mandate instrument is the
    instrument's (:func:`with_mandate`)."""
    invoice, history = ctx.table("Invoice"), ctx.table("InvoiceExportHistory")
    query = (
        sa.select(invoice.c.id, invoice.c.account, invoice.c.directdebitmandatereference, sa.func.count(history.c.id))
        .join(history, history.c.invoice == invoice.c.id)
        .where(history.c.exportformat.in_(DEBIT_MESSAGES))
        .group_by(invoice.c.id, invoice.c.account, invoice.c.directdebitmandatereference)
    )
    returned = returned_collections(conn, ctx)
    mandates = default_mandates(conn, ctx)
    used = set()
    for invoice_id, account, mandate, exported in conn.execute(query):
        if int(account) in mandates:
            mandate = mandates[int(account)]["mandatereference"]
        if mandate is not None and exported > returned.get(int(invoice_id), 0):
            used.add((int(account), str(mandate)))
    return used


def default_mandates(conn: sa.Connection, ctx: Context) -> dict[int, dict]:
    """Account id -> its default active SEPA Direct Debit payment instrument
    (``PaymentInstrument``, checked where it was made), for the orgs that have them."""
    if ctx.model.object("PaymentInstrument") is None:
        return {}
    table = ctx.table("PaymentInstrument")
    query = sa.select(table).where(table.c.type == "SEPA Direct Debit", table.c.active.is_(True),
                                   table.c.isdefault.is_(True)).order_by(table.c.id)
    return {int(r["account"]): dict(r) for r in conn.execute(query).mappings()}


def with_mandate(row: Mapping[str, Any], instrument: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The invoice ``row`` with the bank data of the account's mandate
    instrument in place of its own fields (payment instruments replace the
    billing side's bank data, seed 000); the sequence type then follows the
    mandate's history alone (a recorded FRST/RCUR of the invoice is dropped,
    OOFF and FNAL stay; a mandate collected before metabill, ``UsedBefore``,
    is RCUR)."""
    if instrument is None:
        return row
    given = row.get("directdebitsequencetype")
    return {**row, "bankaccount": instrument["iban"], "bankcode": instrument["bic"],
            "bankaccountowner": instrument["accountholder"] or row.get("bankaccountowner") or row.get("accountname"),
            "directdebitmandatereference": instrument["mandatereference"],
            "directdebitmandategranted": instrument["mandatesignaturedate"],
            "directdebitsequencetype": given if given in ("OOFF", "FNAL") else (
                "RCUR" if instrument.get("usedbefore") else None)}


def _returned_count(ctx: Context, invoice: sa.Table) -> sa.ColumnElement:
    """How many collections of ``invoice`` a bank returned, as a correlated
    subquery (0 for an org without payment entries); counted like
    :func:`returned_collections`."""
    entry = ctx.model.object("PaymentEntry")
    if entry is None or entry.field("IsReturn") is None:
        return sa.literal(0)
    entries = ctx.table("PaymentEntry")
    return sa.select(sa.func.count(entries.c.id)).where(
        entries.c.isreturn.is_(True), entries.c.status == "Assigned",
        entries.c.invoice == invoice.c.id).scalar_subquery()


def returned_collections(conn: sa.Connection, ctx: Context) -> dict[int, int]:
    """Invoice id -> how many of its collections a bank statement returned."""
    entry = ctx.model.object("PaymentEntry")
    if entry is None or entry.field("IsReturn") is None:
        return {}
    entries = ctx.table("PaymentEntry")
    query = (sa.select(entries.c.invoice, sa.func.count()).where(
        entries.c.isreturn.is_(True), entries.c.status == "Assigned", entries.c.invoice.is_not(None))
        .group_by(entries.c.invoice))
    return {int(i): int(n) for i, n in conn.execute(query)}


def sequence_type(given: object, used: bool) -> str:
    """The invoice's sequence type as recorded, except that a recorded FRST
    becomes RCUR once the mandate was collected by an earlier export; when
    none is recorded: FRST for the first collection under the mandate, RCUR
    afterwards (docs/decisions.md, "SEPA exports")."""
    text = str(given or "").strip()
    if text in ("RCUR", "OOFF", "FNAL"):
        return text
    return "RCUR" if used else "FRST"


def open_installments(conn: sa.Connection, ctx: Context, invoice_ids: list[int]) -> dict[int, list[dict]]:
    """The installments with an open amount of the given invoices, in plan
    order (their open amounts follow the invoices' balances:
    :mod:`engine.booking.dues`)."""
    if ctx.model.object("Installment") is None or not invoice_ids:
        return {}
    table = ctx.table("Installment")
    found: dict[int, list[dict]] = {}
    for chunk in chunks(invoice_ids, 900):
        query = (sa.select(table.c.id, table.c.invoice, table.c.sequence, table.c.date, table.c.openpaymentamount)
                 .where(table.c.invoice.in_(chunk), table.c.openpaymentamount != sa.literal(
                     Decimal("0.00"), table.c.openpaymentamount.type))
                 .order_by(table.c.invoice, table.c.sequence, table.c.id))
        for row in conn.execute(query).mappings():
            found.setdefault(row["invoice"], []).append(dict(row))
    return found


@dataclass(frozen=True)
class Collection:
    """What a direct debit of an invoice collects: the amount, the date, the
    EndToEndId and the installments it pays (none without a plan)."""

    amount: Decimal
    when: date
    end_to_end_id: str
    installments: tuple[int, ...] = ()


def collection(row: Mapping[str, Any], plan: list[dict], *, when: date | None, today: date) -> Collection:
    """What the direct debit of the invoice ``row`` collects (pure; domain-spec
    §4.9 "SEPA DD export ... consider only the currently due
    installment(s)", §7.2). Without a payment plan: its open balance, on
    ``when`` or its due date, not before ``today``. With one: the next due
    installment and every other open installment due by the collection date
    (never more than the balance), collected on ``when`` or the next
    installment's due date (not before ``today``), with the EndToEndId
    ``<number>/<installment no.>``."""
    balance = Decimal(row["balance"]).quantize(CENT)
    name = str(row["name"])
    positive = [i for i in plan if Decimal(i["openpaymentamount"]) > 0]
    if not positive:
        due: date | None = row.get("_due")
        return Collection(balance, when or max(due or today, today), name)
    first = positive[0]
    day = when or max(first["date"], today)
    collected = [i for i in positive if i["date"] <= max(day, first["date"])]
    amount = min(sum((Decimal(i["openpaymentamount"]) for i in collected), Decimal("0.00")), balance)
    return Collection(amount.quantize(CENT), day, f"{name}/{int(first['sequence'] or 0)}",
                      tuple(int(i["id"]) for i in collected))


def select_invoices(conn: sa.Connection, ctx: Context, report: SepaReport, *, when: date | None, today: date,
                    force: bool) -> None:
    """Direct debits or credit transfers of the entity's open SEPA invoices.
    A direct debit is collected on ``when``, else on its due date but not
    before ``today``, for the installments due when the invoice has a
    payment plan (:func:`collection`); a credit transfer is executed on
    ``when``, else today."""
    debit = report.kind == DEBIT
    setting = report.setting
    used = used_mandates(conn, ctx) if debit else set()
    lead_days = ctx.settings.payment_lead_days
    mandates = default_mandates(conn, ctx) if debit else {}
    horizon = (when or today) + timedelta(days=DUE_WINDOW_DAYS)
    query = invoice_query(ctx, entity=report.creditor.entity, debit=debit, setting=setting)
    rows = list(conn.execute(query).mappings())
    plans = open_installments(conn, ctx, [int(row["id"]) for row in rows]) if debit else {}
    for row in rows:
        forced = bool(row["_locked"])
        if forced and not force:
            report.already_exported.append(str(row["name"]))
            continue
        due: date | None = row["_due"]
        if debit:
            row = with_mandate(row, mandates.get(int(row["account"])))
            if due is not None and due > horizon:
                report.not_due.append(str(row["name"]))
                continue
            collected = collection(row, plans.get(int(row["id"]), []), when=when, today=today)
            if when is None:  # the due date on a TARGET2 business day, not before the lead time allows
                collected = replace(collected, when=collection_date(collected.when, today, lead_days))
            result = debit_order(row, collected, used=used, setting=setting, forced=forced)
        else:
            result = credit_order(row, when=when or today, setting=setting, forced=forced)
        if isinstance(result, str):
            report.rejected.append(Rejected(int(row["id"]), str(row["name"]), row.get("accountname"),
                                            Decimal(row["balance"]), result))
        else:
            report.transactions.append(result)


def party_problems(row: Mapping[str, Any], end_to_end_id: str | None = None) -> tuple[list[str], str | None,
                                                                                        str | None, str]:
    """Problems with the invoice's bank data, and its IBAN, BIC and holder
    (``end_to_end_id``: the id the order carries, default the number)."""
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
    name = end_to_end_id or str(row.get("name") or "")
    if not is_sepa_text(name, ID_LENGTH):
        problems.append(f"invoice number {name!r} cannot be the EndToEndId (at most {ID_LENGTH} SEPA characters)")
    return problems, iban, bic, holder


def debit_order(row: Mapping[str, Any], collected: Collection, *, used: set[tuple[int, str]],
                setting: SepaSetting, forced: bool) -> Transaction | str:
    """The direct debit of an invoice (what :func:`collection` says it
    collects), or the reason it cannot be made."""
    when = collected.when
    problems, iban, bic, holder = party_problems(row, collected.end_to_end_id)
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
        record_id=int(row["id"]), record_name=str(row["name"]), end_to_end_id=collected.end_to_end_id,
        account=int(row["account"]), account_name=row.get("accountname"),
        amount=collected.amount, currency=CURRENCY, when=when,
        iban=iban, bic=bic, holder=holder, remittance=remittance_text(setting.reference_text, row),
        due_date=row.get("_due"), sequence_type=sequence_type(given, (int(row["account"]), mandate) in used),
        mandate_id=mandate, mandate_date=signed, forced=forced, installments=collected.installments,
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


def pay_out(credit: Decimal, left: Decimal) -> Decimal:
    """The pay-out of one free credit balance of ``credit`` (positive) when
    the account has ``left`` free credit not yet paid by this export: never
    more than the account's free credit, so that credit already taken by a
    refund, a pay-out or a fee is not paid a second time."""
    return min(credit, max(left, Decimal(0)))


def select_balances(conn: sa.Connection, ctx: Context, report: SepaReport, when: date) -> None:
    """The free Payment/Prepayment credits of the entity's accounts that are
    not locked, not drafts and not from Cash Management, paid out on ``when``
    to the account's bank account, each account at most its free credit
    (:func:`engine.booking.balances.free_credits`, :func:`pay_out`): a balance whose credit other
    free balances took is paid in part, or not at all (``report.netted``)."""
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
    candidates = list(conn.execute(query).mappings())
    # Their accounts are locked on PostgreSQL (lock_candidates): the sum is taken after any refund in flight.
    left = free_credits(conn, ctx, {int(row["account"]) for row in candidates}, CURRENCY)
    for row in candidates:
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
        amount = pay_out((-Decimal(row["amount"])).quantize(CENT), left[int(row["account"])])
        if amount <= 0:
            report.netted.append(str(row["name"]))
            continue
        left[int(row["account"])] -= amount
        report.transactions.append(Transaction(
            record_id=int(row["id"]), record_name=str(row["name"]), end_to_end_id=str(row["name"]),
            account=int(row["account"]), account_name=row["_account_name"],
            amount=amount, currency=CURRENCY, when=when,
            iban=iban, bic=bic, holder=holder, remittance=remittance_text(report.setting.reference_text, row),
        ))
