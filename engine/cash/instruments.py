"""Payment instruments: a customer's bank account or SEPA direct debit mandate
as a record of its own (seed 000: "payment instrument replaced by payment
instrument").

Every instrument is checked where it enters (:func:`check_instrument`, pure):
IBAN and BIC with schwifty (check digits, country format, SEPA zone; the BIC
derived from a German or Austrian IBAN's bank code when none is given), the
mandate reference as a SEPA identifier (at most 35 of the SEPA basic
characters, no leading/trailing or double ``/``), the signature date present
and not in the future. A mandate reference is unique.

An account has at most one default active instrument of a type; adding a
default one makes the others of its type non-default. SEPA exports and
payment runs (``engine/exports/sepa_selection.py``) take the default active
SEPA Direct Debit instrument of the invoice's account before the invoice's
own bank fields, and its sequence type from the mandate's collection history
(FRST until a collection under it went through, RCUR afterwards; a returned
first collection leaves it FRST).

:func:`instruments_from_accounts` migrates the billing side's bank data (the
Account fields ``ON_BankAccount__c``, ``ON_BankCode__c``,
``ON_BankAccountOwner__c``, ``ON_DirectDebitMandateReference__c``,
``ON_DirectDebitMandateGranted__c``) into instruments, once per account; a
recorded sequence type RCUR (``ON_DirectDebitSequenceType__c``) marks the
mandate as collected before (``UsedBefore``: its next collection is RCUR).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

import sqlalchemy as sa
from schwifty import BIC, IBAN

from engine.domain.errors import Problem, Where
from engine.storage.bulk import RowWriter, update_by_id
from engine.storage.context import Context

from .errors import InstrumentError, PaymentTargetNotFound

DIRECT_DEBIT, BANK_ACCOUNT = "SEPA Direct Debit", "Bank Account"
TYPES = (DIRECT_DEBIT, BANK_ACCOUNT)
_SEPA_ID = re.compile(r"[A-Za-z0-9/\-?:().,'+ ]{1,35}")
#: Account fields of the billing side's bank data -> instrument field.
ACCOUNT_FIELDS = {"on_bankaccount__c": "iban", "on_bankcode__c": "bic", "on_bankaccountowner__c": "accountholder",
                  "on_directdebitmandatereference__c": "mandatereference",
                  "on_directdebitmandategranted__c": "mandatesignaturedate",
                  "on_directdebitsequencetype__c": "sequencetype"}


@dataclass(frozen=True)
class InstrumentInput:
    """An instrument as a user gives it."""

    account_number: str
    type: str
    iban: str
    bic: str | None = None
    holder: str | None = None
    mandate_reference: str | None = None
    signature_date: date | None = None
    default: bool = True
    used_before: bool = False


@dataclass(frozen=True)
class CheckedInstrument:
    iban: str
    bic: str | None
    holder: str | None
    mandate_reference: str | None
    signature_date: date | None


def check_instrument(given: InstrumentInput, today: date) -> tuple[CheckedInstrument | None, list[str]]:
    """The instrument with IBAN and BIC in compact form, or the problems (pure)."""
    problems: list[str] = []
    if given.type not in TYPES:
        problems.append(f"type {given.type!r} is not one of {', '.join(TYPES)}")
    iban_text = (given.iban or "").strip()
    iban = None
    try:
        iban = IBAN(iban_text)
        if not iban.in_sepa_zone:
            problems.append(f"IBAN {iban_text!r} is not an IBAN of the SEPA zone")
    except ValueError as error:
        problems.append(f"IBAN {iban_text!r} is not valid ({error})" if iban_text else "IBAN is empty")
        iban = None
    bic = None
    if given.bic and given.bic.strip():
        try:
            bic = str(BIC(given.bic.strip()).compact)
        except ValueError as error:
            problems.append(f"BIC {given.bic.strip()!r} is not valid ({error})")
    elif iban is not None:
        try:
            derived = iban.bic
        except Exception:  # noqa: BLE001 - registry look-ups differ between countries; a missing BIC is fine
            derived = None
        bic = str(derived.compact) if derived is not None else None
    mandate = (given.mandate_reference or "").strip() or None
    if given.type == DIRECT_DEBIT:
        if mandate is None:
            problems.append("a SEPA Direct Debit instrument needs a mandate reference")
        elif (not _SEPA_ID.fullmatch(mandate) or mandate.startswith("/") or mandate.endswith("/")
              or "//" in mandate):
            problems.append(f"mandate reference {mandate!r} is not at most 35 SEPA characters "
                            "(A-Z a-z 0-9 / - ? : ( ) . , ' + and space, no leading, trailing or double '/')")
        if given.signature_date is None:
            problems.append("a SEPA Direct Debit instrument needs the mandate's date of signature")
        elif given.signature_date > today:
            problems.append(f"the mandate's date of signature {given.signature_date} is in the future")
    elif mandate is not None:
        problems.append("a bank account instrument has no mandate reference")
    holder = (given.holder or "").strip() or None
    if holder is not None and len(holder) > 70:
        problems.append("the account holder has more than 70 characters")
    if problems or iban is None:
        return None, problems
    return CheckedInstrument(str(iban.compact), bic, holder, mandate, given.signature_date), []


@dataclass
class InstrumentReport:
    created: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def add_instrument(conn: sa.Connection, ctx: Context, given: InstrumentInput, *, today: date, run: str) -> dict:
    """Store a checked instrument for the account numbered ``given.account_number``."""
    where = Where(object="PaymentInstrument", record=given.account_number)
    accounts, table = ctx.table("Account"), ctx.table("PaymentInstrument")
    account = conn.execute(sa.select(accounts.c.id).where(accounts.c.accountnumber == given.account_number)).scalar()
    if account is None:
        raise PaymentTargetNotFound(f"no account with account number {given.account_number}",
                                    where=Where(object="Account", record=given.account_number))
    checked, problems = check_instrument(given, today)
    if checked is None:
        raise InstrumentError(f"the payment instrument of account {given.account_number} is refused",
                              where=where, problems=[Problem(InstrumentError.code, p, where) for p in problems])
    if checked.mandate_reference is not None and conn.execute(sa.select(table.c.name).where(
            table.c.mandatereference == checked.mandate_reference)).first() is not None:
        raise InstrumentError(f"mandate reference {checked.mandate_reference} is used by another instrument",
                              where=where, hint="a mandate reference identifies one mandate of the creditor")
    if given.default:
        others = [r.id for r in conn.execute(sa.select(table.c.id).where(
            table.c.account == account, table.c.type == given.type, table.c.isdefault.is_(True)))]
        if others:
            update_by_id(conn, ctx.obj("PaymentInstrument"), ["IsDefault"], [(i, [False]) for i in others])
    row = {"account": account, "type": given.type, "iban": checked.iban, "bic": checked.bic,
           "accountholder": checked.holder, "mandatereference": checked.mandate_reference,
           "mandatesignaturedate": checked.signature_date, "isdefault": given.default, "active": True,
           "usedbefore": bool(given.used_before and checked.mandate_reference),
           "run": run[:64], "confighash": ctx.config_hash}
    RowWriter(conn, ctx.obj("PaymentInstrument")).insert([row])
    return row


def instruments_from_accounts(conn: sa.Connection, ctx: Context, *, today: date, run: str) -> InstrumentReport:
    """One instrument per account with bank data in its ON fields and none
    yet: a SEPA Direct Debit instrument when a mandate is recorded, else a
    bank account. Accounts whose data does not pass the checks are skipped
    with the reason (their invoices keep their own fields)."""
    accounts, table = ctx.table("Account"), ctx.table("PaymentInstrument")
    present = [c for c in ACCOUNT_FIELDS if c in accounts.c]
    report = InstrumentReport()
    if "on_bankaccount__c" not in present:
        return report
    having = {r.account for r in conn.execute(sa.select(table.c.account).distinct())}
    rows = conn.execute(sa.select(accounts.c.id, accounts.c.accountnumber, *[accounts.c[c] for c in present])
                        .where(accounts.c.on_bankaccount__c.is_not(None)).order_by(accounts.c.accountnumber))
    for row in rows.mappings():
        if row["id"] in having:
            continue
        values = {ACCOUNT_FIELDS[c]: row[c] for c in present}
        mandate = values.get("mandatereference")
        given = InstrumentInput(str(row["accountnumber"]), DIRECT_DEBIT if mandate else BANK_ACCOUNT,
                                str(values["iban"]), values.get("bic"), values.get("accountholder"), mandate,
                                values.get("mandatesignaturedate"),
                                used_before=values.get("sequencetype") == "RCUR")
        savepoint = conn.begin_nested()
        try:
            made = add_instrument(conn, ctx, given, today=today, run=run)
            savepoint.commit()
        except InstrumentError as error:
            savepoint.rollback()
            reasons = "; ".join(p.message for p in error.problems) or error.message
            report.skipped.append(f"account {row['accountnumber']}: {reasons}")
            continue
        report.created.append(f"{made['name']} ({given.type}) for account {row['accountnumber']}")
    return report


def list_instruments(conn: sa.Connection, ctx: Context) -> list[dict]:
    accounts, table = ctx.table("Account"), ctx.table("PaymentInstrument")
    query = (sa.select(table, accounts.c.accountnumber).join(accounts, accounts.c.id == table.c.account)
             .order_by(accounts.c.accountnumber, table.c.name))
    return [dict(r) for r in conn.execute(query).mappings()]


__all__ = ["BANK_ACCOUNT", "DIRECT_DEBIT", "InstrumentInput", "InstrumentReport", "add_instrument",
           "check_instrument", "instruments_from_accounts", "list_instruments"]
