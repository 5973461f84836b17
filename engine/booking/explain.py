"""``metabill explain INVOICE``: why each booking detail of an invoice posts
where it does.

For every booking detail the account decision is made again with the same
pure functions finalization used (:mod:`engine.booking.accounts`), from the
stored invoice, line and booking values, and printed with the criteria the
winning rule compared and why each other rule lost. When today's
configuration would choose differently than the stored booking (the rules
changed since), the explanation says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import sqlalchemy as sa

from engine.domain.rules import RuleDecision

from .accounts import AccountResolver
from .postings import sides
from engine.storage.context import Context


class ExplainError(ValueError):
    pass


@dataclass(frozen=True)
class Explanation:
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


def explain_invoice(conn: sa.Connection, ctx: Context, invoice_name: str) -> list[Explanation]:
    model = ctx.model
    tables = ctx.metadata.tables
    invoice_table = tables[model.require("Invoice").table_name]
    line_table = tables[model.require("InvoiceLineItem").table_name]
    detail_table = tables[model.require("BookingDetail").table_name]
    invoice = conn.execute(sa.select(invoice_table).where(invoice_table.c.name == invoice_name)).mappings().first()
    if invoice is None:
        raise ExplainError(f"no invoice {invoice_name}")
    invoice = dict(invoice)
    lines = {str(r["name"]): dict(r) for r in conn.execute(sa.select(line_table).where(line_table.c.invoice == invoice["id"])).mappings()}
    details = [dict(r) for r in conn.execute(
        sa.select(detail_table).where(detail_table.c.invoice == invoice["id"]).order_by(detail_table.c.bookingdate, detail_table.c.id)
    ).mappings()]
    if not details:
        raise ExplainError(f"{invoice_name} has no booking details (is it finalized, and bookkeeping on?)")
    resolver = AccountResolver(ctx)
    codes = {line.get("taxcode") for line in lines.values() if line.get("taxcode")}
    out = []
    for detail in details:
        debit, credit = sides(detail)
        first_line = next(
            (lines[name.strip()] for name in str(detail.get("invoicelineitems") or "").split(",") if name.strip() in lines),
            None,
        )
        if detail["type"] == "Revenue" and first_line is not None:
            choice = resolver.gl_account(invoice, first_line)
            source = f"Assignment Rules - G/L Account for line {first_line['name']} ('{first_line.get('title')}')"
            if choice.account is None:
                choice = resolver.collective_account("Revenue", _context(detail, codes))
                source = "no G/L rule matched: collective account of type Revenue"
        else:
            choice = resolver.collective_account(str(detail["type"]), _context(detail, codes))
            source = f"Collective Accounts of type {detail['type']}"
        out.append(Explanation(detail, debit, credit, choice.decision, source, choice.account))
    return out


def _context(detail: dict, invoice_codes: set) -> dict:
    tax_code = detail.get("taxcode") or (next(iter(invoice_codes)) if len(invoice_codes) == 1 else None)
    return {
        "taxcode": tax_code,
        "appliedtaxrule": detail.get("appliedtaxrule"),
        "businessentity": detail.get("businessentity"),
        "region": detail.get("region"),
        "billingpractice": detail.get("billingpractice"),
        "paymentprovider": detail.get("paymentprovider"),
        "bankaccountid": detail.get("bankaccountid"),
        "clearingreason": detail.get("clearingreason"),
    }
