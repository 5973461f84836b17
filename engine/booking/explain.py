"""``metabill explain INVOICE``: why each booking detail of an invoice posts
where it does.

For every booking detail the account decision is made again with the same
pure functions finalization used (:mod:`engine.booking.accounts`), asked the
same question (:mod:`engine.booking.questions`) from the stored invoice,
line, balance and booking values, and printed with the criteria the winning
rule compared and why each other rule lost. Which question a detail was
booked with follows from the detail itself:

* a reversal (``ReversalOf``) keeps the accounts of the detail it reverses:
  that detail is explained;
* a balance's detail (payment, write-off, ...): the balance question, per
  tax group when the detail carries a tax rate;
* an invoice's own detail: the G/L rules for revenue, else the collective
  account asked with the line question of the first line it books;
* the final invoice's clearing of a progress invoice's interim revenue: the
  line question of the progress invoice's clearing line.

When today's configuration would choose differently than the stored booking
(the rules changed since), the explanation says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import sqlalchemy as sa

from engine.domain.rules import RuleDecision
from engine.storage.context import Context

from .accounts import AccountChoice, AccountResolver
from .errors import ExplainError, invoice_where
from .postings import sides
from .questions import balance_question, clearing_line, line_question, per_tax_group

__all__ = ["ExplainError", "Explanation", "explain", "explain_invoice"]


@dataclass(frozen=True)
class Explanation:
    """One booking detail with its posting sides and the account decision
    made again (``current_account``: what today's configuration chooses)."""

    detail: dict
    debit: str | None
    credit: str | None
    decision: RuleDecision | None
    source: str  # what was decided: "G/L rule for line ...", "collective account of type Tax"
    current_account: str | None

    def lines(self) -> Iterator[str]:
        d = self.detail
        yield (f"{d['name']}  {d['type']}  {d['amount']} {d.get('currencyisocode') or ''}  "
               f"debit {self.debit} / credit {self.credit}  (AccountNo {d.get('accountno')}, rule '{d.get('accountrule')}')")
        yield f"    decided by: {self.source}"
        if self.decision is None:
            return
        for position, candidate in enumerate(self.decision.candidates):
            compared = ", ".join(
                f"{c.criterion}={c.rule_value!r} vs {c.context_value!r}" for c in candidate.comparisons if c.rule_value
            ) or "no criteria (catch-all)"
            label = "WON " if position == 0 else "lost"
            reason = "" if position == 0 else " (less specific" + (", tie broken by name" if self.decision.tie else "") + ")"
            yield f"    {label} '{candidate.name}': {compared}{reason}"
        for candidate in self.decision.rejected:
            yield f"    no   '{candidate.name}': {candidate.why_not()}"
        if self.decision.winner is None:
            yield "    no rule matched"
        if self.current_account is not None and self.current_account != d.get("accountno"):
            yield (f"    note: today's configuration would choose {self.current_account}; "
                   "the booking keeps the account of its finalization")


def explain(engine: sa.Engine, ctx: Context, invoice_name: str) -> list[Explanation]:
    """The service of ``metabill explain``: :func:`explain_invoice` on a
    connection of its own (it reads only)."""
    with engine.connect() as conn:
        return explain_invoice(conn, ctx, invoice_name)


def explain_invoice(conn: sa.Connection, ctx: Context, invoice_name: str) -> list[Explanation]:
    """One :class:`Explanation` per booking detail of the invoice, in booking
    order; :class:`ExplainError` for an unknown invoice or one without
    booking details."""
    invoice_table = ctx.table("Invoice")
    detail_table = ctx.table("BookingDetail")
    where = invoice_where(invoice_name)
    invoice = conn.execute(sa.select(invoice_table).where(invoice_table.c.name == invoice_name)).mappings().first()
    if invoice is None:
        raise ExplainError(f"no invoice {invoice_name}", where=where)
    details = [dict(r) for r in conn.execute(
        sa.select(detail_table).where(detail_table.c.invoice == invoice["id"]).order_by(detail_table.c.bookingdate, detail_table.c.id)
    ).mappings()]
    if not details:
        raise ExplainError(f"{invoice_name} has no booking details (is it finalized, and bookkeeping on?)", where=where,
                           hint="only finalized invoices of an org with CreateBookkeepingData have booking details")
    asker = _Asker(conn, ctx)
    out = []
    for detail in details:
        debit, credit = sides(detail)
        choice, source = asker.decide(detail)
        out.append(Explanation(detail, debit, credit, choice.decision, source, choice.account))
    return out


class _Asker:
    """Asks, for a stored booking detail, the account question it was booked
    with; reads the invoices, lines, balances and reversed details it needs
    once."""

    def __init__(self, conn: sa.Connection, ctx: Context):
        self.conn = conn
        self.ctx = ctx
        self.resolver = ctx.service(AccountResolver)
        self._invoices: dict[object, tuple[dict, list[dict]]] = {}

    def decide(self, detail: Mapping[str, object]) -> tuple[AccountChoice, str]:
        """The detail's account decision made again, and what was decided."""
        booking_type = str(detail["type"])
        if detail.get("reversalof") is not None:
            original = self._row("BookingDetail", detail["reversalof"])
            if original is not None:
                choice, source = self.decide(original)
                return choice, f"reversal of {original['name']} (same accounts); {source}"
        invoice, lines = self._invoice(detail.get("invoice"))
        if detail.get("balance") is not None:
            balance = self._row("Balance", detail["balance"]) or {
                **detail, "date": detail.get("paymentdate") or detail.get("bookingdate")}
            question = balance_question(self.ctx, balance, invoice, lines)
            if detail.get("taxrate") is not None:  # booked per tax group of the invoice
                question = per_tax_group(question, detail.get("taxcode"), detail.get("appliedtaxrule"))
            return self.resolver.collective_account(booking_type, question), f"Collective Accounts of type {booking_type}"
        named = {str(line.get("name")): line for line in lines}
        first_line = next((named[name.strip()] for name in str(detail.get("invoicelineitems") or "").split(",")
                           if name.strip() in named), None)
        if booking_type == "Revenue" and first_line is not None:
            choice = self.resolver.gl_account(invoice, first_line)
            if choice.account is not None:
                return choice, (f"Assignment Rules - G/L Account for line {first_line['name']} "
                                f"('{first_line.get('title')}')")
            return (self.resolver.collective_account("Revenue", line_question(invoice, first_line)),
                    "no G/L rule matched: collective account of type Revenue")
        line = first_line if first_line is not None else clearing_line(lines, detail)
        return (self.resolver.collective_account(booking_type, line_question(invoice, line)),
                f"Collective Accounts of type {booking_type}")

    def _invoice(self, invoice_id: object) -> tuple[dict, list[dict]]:
        """An invoice and its lines in line order ({} and [] for none)."""
        found = self._invoices.get(invoice_id)
        if found is None:
            invoice = self._row("Invoice", invoice_id) if invoice_id is not None else None
            lines: Sequence[dict] = []
            if invoice is not None:
                table = self.ctx.table("InvoiceLineItem")
                lines = [dict(r) for r in self.conn.execute(
                    sa.select(table).where(table.c.invoice == invoice_id).order_by(table.c.sequence, table.c.id)
                ).mappings()]
            found = self._invoices[invoice_id] = (invoice or {}, list(lines))
        return found

    def _row(self, object_name: str, record_id: object) -> dict | None:
        table = self.ctx.table(object_name)
        row = self.conn.execute(sa.select(table).where(table.c.id == record_id)).mappings().first()
        return dict(row) if row is not None else None
