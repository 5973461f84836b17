"""Building draft invoices from evaluated source records: pure functions.

The run (:mod:`engine.billing.run`) reads and evaluates source records into
:class:`SourceHeader` / :class:`SourceLine` values and resolves accounts and
templates; this module turns one group of them into a :class:`DraftInvoice`
(header fields and line fields as dicts keyed by lower-case field name),
without touching the database. That keeps the money logic testable on its own
and identical for the real run and the dry run.

Header fields are filled in precedence order, and a value once set is never
overwritten (seed 004, domain-spec §2.1): engine-set fields, then the source
record's ON fields, then the account's standard data, then the account's ON
fields, then template defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from functools import lru_cache
from itertools import chain
from operator import attrgetter, itemgetter
from typing import Callable, Iterable, Mapping, Sequence

from engine.config.model import SettingRecord
from engine.domain.errors import EngineError, Where
from engine.domain.money import CENT, ZERO, allocate, net_of_gross, round_money, tax_of

from .tax import TaxDecision, TaxError, TaxResolver

SUB_TYPES = ("Partial", "Progress")
FINAL_TYPE = "Final"
STANDARD_TYPE = "Standard"
#: A deposit invoice (domain-spec §4.10): a down payment requested before the
#: final invoice, which deducts what was paid on it; booked like a progress
#: invoice (interim, not revenue), and closed by its final invoice.
DEPOSIT_TYPE = "Deposit"
#: Invoice types a final invoice deducts.
DEDUCTED_TYPES = SUB_TYPES + (DEPOSIT_TYPE,)
#: Invoice types grouped and associated by their sub-invoice assignment key.
KEYED_TYPES = DEDUCTED_TYPES + (FINAL_TYPE,)

# Account data copied to the invoice (target <- account field), before the
# account's ON fields. Only address and currency data: an account's own Type
# or Balance mean something else on an invoice.
ACCOUNT_TO_INVOICE: tuple[tuple[str, str], ...] = (
    ("accountname", "name"),
    ("billingstreet", "billingstreet"),
    ("billingcity", "billingcity"),
    ("billingpostalcode", "billingpostalcode"),
    ("billingstate", "billingstate"),
    ("billingcountry", "billingcountry"),
    ("billingcountrycode", "billingcountrycode"),
    ("shippingstreet", "shippingstreet"),
    ("shippingcity", "shippingcity"),
    ("shippingpostalcode", "shippingpostalcode"),
    ("shippingcountry", "shippingcountry"),
    ("shippingcountrycode", "shippingcountrycode"),
    ("currencyisocode", "currencyisocode"),
)


class BuildError(EngineError, ValueError):
    """A group of source records cannot become an invoice (no tax rule
    decides a line, a sub invoice to deduct is still a draft).

    The run reports it for every source record of the group and bills the
    others (see :class:`engine.billing.report.RecordFailure`).
    """

    code = "R205"


class InvariantError(AssertionError):
    """An invoice broke an invariant; this is a bug, never a user error."""


@dataclass
class SourceLine:
    object_name: str
    record_id: int
    order: tuple
    fields: dict  # InvoiceLineItem fields from controls and ON copies
    criterion: str | None = None  # a line-level invoice criterion


@dataclass
class SourceHeader:
    object_name: str
    record_id: int
    account_id: int
    template: SettingRecord
    invoice_type: str
    assignment_key: str | None
    criterion: str | None
    currency: str
    business_entity: str | None
    invoice_fields: dict  # Invoice fields from the source's ON copies
    lines: list[SourceLine] = field(default_factory=list)

    def group_key(self) -> tuple:
        """Records with equal keys become one invoice. The first element puts
        final invoices after everything else, so that a run billing a sub
        invoice and its final invoice builds (and refuses) the final last."""
        key = self.assignment_key if self.invoice_type in KEYED_TYPES else None
        return (
            1 if self.invoice_type == FINAL_TYPE else 0,
            self.account_id,
            self.template.name,
            self.currency,
            self.business_entity or "",
            self.invoice_type,
            key or "",
            self.criterion or "",
        )


@dataclass
class SubInvoice:
    """A finalized (or draft) sub invoice related to a final invoice."""

    id: int
    name: str
    type: str
    status: str
    grand_total: Decimal
    received: Decimal  # payments received, positive
    lines: list[dict]
    #: What the interim payment bookings of its payments received, gross, per
    #: (tax code, rate, applied tax rule); empty without bookkeeping.
    received_by_group: Mapping[tuple, Decimal] = field(default_factory=dict)
    #: The part of it booked as Interim Tax (the tax arising on receipt), per
    #: the same groups: the tax the final invoice deducts.
    tax_by_group: Mapping[tuple, Decimal] = field(default_factory=dict)


@dataclass
class DraftInvoice:
    header: dict
    lines: list[dict]
    sources: list[SourceHeader]


@dataclass(frozen=True)
class RunFacts:
    """The facts of one invoice run every invoice it builds shares: its run
    record, period and invoice date, the configuration's hash (provenance),
    the rounding mode and the tax resolver."""

    run_id: int | None
    period_start: date
    period_end: date
    invoice_date: date | None
    config_hash: str
    rounding: str  # "PerLine" or "PerTaxGroup"
    tax: TaxResolver


def fill(target: dict, values: Mapping[str, object]) -> None:
    """Set each value unless the target already holds one (never overwrite)."""
    _fill_pairs(target, values.items())


def _fill_pairs(target: dict, pairs: Iterable[tuple[str, object]]) -> None:
    """:func:`fill` of ``(key, value)`` pairs. Blank is None or the empty
    text, tested by type: ``value == ""`` on a Decimal goes through an ABC
    check (numbers.Rational) that cost more than the rest of the loop; no
    other value type here equals the empty text."""
    for key, value in pairs:
        if value is None or (isinstance(value, str) and not value):
            continue
        held = target.get(key)
        if held is None or (isinstance(held, str) and not held):
            target[key] = value


def draft_header(run: RunFacts, sources: Sequence[SourceHeader], account: Mapping[str, object],
                 account_copies: Mapping[str, object]) -> dict:
    """The header fields of a group's draft before its lines: engine-set
    fields, the sources' ON copies, the account's data and ON fields, the
    template's payment terms, in that precedence. Shared by
    :func:`build_invoice` and the set-based run (:mod:`engine.billing.setrun`)."""
    first = sources[0]
    header: dict = {
        "account": first.account_id,
        "status": "Draft",
        "type": first.invoice_type,
        "template": first.template.name,
        "currencyisocode": first.currency,
        "businessentity": first.business_entity,
        "subinvoiceassignmentkey": first.assignment_key if first.invoice_type in KEYED_TYPES else None,
        "date": run.invoice_date,
        "invoicerun": run.run_id,
        "confighash": run.config_hash,
    }
    for source in sources:
        fill(header, source.invoice_fields)
    _fill_pairs(header, [(target, account.get(source)) for target, source in ACCOUNT_TO_INVOICE])
    fill(header, account_copies)
    due = first.template.get("DefaultPaymentDue")
    fill(header, {"paymentdue": due if due is not None else Decimal(0)})
    return header


def build_invoice(
    run: RunFacts,
    sources: Sequence[SourceHeader],
    account: Mapping[str, object],
    account_copies: Mapping[str, object],
    subs: Sequence[SubInvoice] = (),
    amounts_memo: dict | None = None,
) -> DraftInvoice:
    """One draft invoice from one group of source headers (same group key).

    ``amounts_memo``: a dict the caller keeps over many invoices (one batch),
    so that lines of different invoices sharing their quantity, price and
    rate objects are computed once (see :func:`_amounts`); the caller drops
    it with the batch."""
    first = sources[0]
    header = draft_header(run, sources, account, account_copies)

    lines: list[dict] = []
    ordered = sorted(chain.from_iterable(s.lines for s in sources), key=attrgetter("order"))
    line_tax = run.tax.for_header(header)  # the header is complete: its fields are read once
    for position, source_line in enumerate(ordered, start=1):
        # Defaults first, then the source's fields (which win), then the link
        # to the source record.
        line = {
            "sequence": line_position(position),
            "serviceperiodstart": run.period_start,
            "serviceperiodend": run.period_end,
            **source_line.fields,
            "sourceobject": source_line.object_name,
            "sourcerecordid": str(source_line.record_id),
        }
        if line.get("quantity") is None:
            line["quantity"] = Decimal(1)
        if line.get("unitprice") is None:
            raise BuildError(f"{source_line.object_name} {source_line.record_id}: no unit price",
                             where=Where(object=source_line.object_name, record=str(source_line.record_id)))
        _apply_tax(line_tax, header, line)
        lines.append(line)
    if first.invoice_type == FINAL_TYPE:
        lines.extend(deduction_lines(run, header, lines, subs))
    if first.invoice_type == DEPOSIT_TYPE:
        deposit_share(header, lines)
    _amounts(header, lines, run.rounding, amounts_memo)
    _totals(header, lines)
    check_invoice(header, lines)
    return DraftInvoice(header, lines, list(sources))


@lru_cache(maxsize=4096)
def line_position(number: int) -> Decimal:
    """A line position as a Decimal; every invoice numbers its lines 1, 2,
    3..., so the same Decimal objects serve all of them (and the writer then
    converts each once per batch)."""
    return Decimal(number)


def _apply_tax(tax: Callable[[Mapping[str, object], date | None], TaxDecision], header: Mapping[str, object],
               line: dict) -> None:
    when = line.get("serviceperiodstart") or header.get("date")
    try:
        decision = tax(line, when)  # type: ignore[arg-type]
    except TaxError as error:
        raise BuildError(str(error), where=error.where, hint=error.hint) from None
    line["taxrate"] = decision.rate
    if decision.code:
        line["taxcode"] = decision.code
    if decision.rule:
        line["appliedtaxrule"] = decision.rule
    if decision.category:
        line.setdefault("vatcategorycode", decision.category)


def deposit_share(header: Mapping[str, object], lines: list[dict]) -> None:
    """The lines of a deposit invoice (domain-spec §4.10): each line bills
    its share of the deposit, as quantity 1 at that net price. The share is
    ``Invoice.DepositRate`` percent of the line's net (half up to cents), or
    ``Invoice.DepositAmount`` split over the lines in proportion to their net
    (exactly, :func:`engine.domain.money.allocate`); both come from the
    source's ON fields (``ON_DepositRate``, ``ON_DepositAmount``). Neither
    set: the lines as priced (the source prices the deposit itself). Both
    set: a :class:`BuildError` (which one is meant?)."""
    rate, amount = header.get("depositrate"), header.get("depositamount")
    if rate is not None and amount is not None:
        raise BuildError("a deposit invoice takes ON_DepositRate or ON_DepositAmount, not both")
    if rate is None and amount is None:
        return
    nets = [round_money(Decimal(line["quantity"]) * Decimal(line["unitprice"])) for line in lines]
    if rate is not None:
        if not ZERO < Decimal(rate) <= 100:  # type: ignore[arg-type]
            raise BuildError(f"ON_DepositRate {rate} is not a percentage above 0 and at most 100")
        shares = [round_money(net * Decimal(rate) / 100) for net in nets]  # type: ignore[arg-type]
    else:
        total = sum(nets, ZERO)
        if total == 0 or Decimal(amount) == 0 or (Decimal(amount) > 0) != (total > 0) \
                or abs(Decimal(amount)) > abs(total):  # type: ignore[arg-type]
            raise BuildError(f"ON_DepositAmount {amount} does not fit the lines' net total {total}")
        shares = allocate(Decimal(amount), nets)  # type: ignore[arg-type]
    for line, share in zip(lines, shares):
        line["quantity"] = Decimal(1)
        line["unitprice"] = share


def deduction_lines(
    run: RunFacts | None, header: Mapping[str, object], main: Sequence[dict], subs: Sequence[SubInvoice]
) -> list[dict]:
    """The lines of a final invoice that deduct its sub invoices (§3.8).
    (``run`` is not read: the deductions depend on the invoice and its sub
    invoices only, which lets finalization rebuild them without a run.)

    A deduction line carries its amounts (net, tax, gross) fixed: it takes
    back what the sub invoice billed or received, with the tax that was
    charged or booked then, not a tax recomputed from its net (which can
    differ by a cent and would leave it in the tax and interim accounts).
    Partial invoices are complete invoices: each of their lines is deducted
    with its own net and tax. Progress and deposit invoices are deducted
    with what was received on them, per tax group, net and tax as the
    payments booked them (:func:`received_amounts_per_line`). A deduction
    keeps the sub-invoice line's title when a main line has the same title
    (the position is disclosed); otherwise it is titled after the sub
    invoice (hidden in the position table).
    """
    drafts = [s for s in subs if s.status in ("Draft", "Pre-Draft")]
    if drafts:
        names = ", ".join(s.name for s in drafts)
        raise BuildError(
            f"sub invoice(s) {names} of assignment key '{header.get('subinvoiceassignmentkey')}' are still drafts: "
            "finalize them before the final invoice is built"
        )
    gross_mode = bool(header.get("grossinvoice"))
    titles = {str(line.get("title")) for line in main}
    out: list[dict] = []
    sequence = len(main)
    for sub in sorted(subs, key=lambda s: (s.name, s.id)):
        if sub.type == "Partial":
            amounts = [(Decimal(line.get("postotalnet") or ZERO), Decimal(line.get("postotaltax") or ZERO))
                       for line in sub.lines]
        else:
            received = min(sub.received, sub.grand_total) if sub.grand_total > 0 else sub.received
            if received <= 0:
                continue
            amounts = received_amounts_per_line(received, sub.lines, sub.received_by_group, sub.tax_by_group)
        for sub_line, (net, tax) in zip(sub.lines, amounts):
            if net == 0 and tax == 0:
                continue
            sequence += 1
            title = str(sub_line.get("title") or "")
            disclosed = title in titles
            out.append(
                {
                    "sequence": Decimal(sequence),
                    "title": title if disclosed else f"{sub.type} invoice {sub.name}",
                    "quantity": Decimal(1),
                    "unitprice": -(net + tax) if gross_mode else -net,
                    "unitpricenet": -net,
                    "postotalnet": -net,
                    "postotaltax": -tax,
                    "postotalgross": -(net + tax),
                    "taxrate": Decimal(sub_line.get("taxrate") or 0),
                    "taxcode": sub_line.get("taxcode"),
                    "appliedtaxrule": sub_line.get("appliedtaxrule"),
                    "vatcategorycode": sub_line.get("vatcategorycode"),
                    "glaccount": sub_line.get("glaccount"),
                    "isdeduction": True,
                    "subinvoice": sub.id,
                    "serviceperiodstart": sub_line.get("serviceperiodstart"),
                    "serviceperiodend": sub_line.get("serviceperiodend"),
                    "sourceobject": "Invoice",
                    "sourcerecordid": str(sub.id),
                }
            )
    return out


def tax_group(line: Mapping[str, object]) -> tuple:
    """The (tax code, rate, applied tax rule) a line is taxed and booked in."""
    return (line.get("taxcode"), Decimal(line.get("taxrate") or 0), line.get("appliedtaxrule"))


def received_per_group(received: Decimal, lines: Sequence[Mapping[str, object]], booked: Mapping[tuple, Decimal],
                       booked_tax: Mapping[tuple, Decimal]) -> list[tuple[tuple, Decimal, Decimal]]:
    """What a progress or deposit invoice received per tax group, as
    (group, gross, tax), in a stable order (tax code, rate).

    When its payments were booked, the interim bookings say it (``booked``
    gross and ``booked_tax`` per group): those are the amounts the interim
    accounts hold, so the deduction takes exactly them. Without bookkeeping
    (or when the bookings do not add up to ``received``, e.g. an overpayment
    capped at the grand total) the received amount is split in proportion
    to each group's gross, as a payment's interim bookings split it, and
    each part's tax is the tax it contains (gross less its net, rounded
    once), as a payment books it."""
    gross: dict[tuple, Decimal] = {}
    for line in lines:
        key = tax_group(line)
        gross[key] = gross.get(key, ZERO) + Decimal(line.get("postotalgross") or ZERO)
    keys = sorted((k for k, v in gross.items() if v != 0), key=lambda k: (str(k[0]), k[1], str(k[2])))
    if booked and set(booked) <= set(keys) and sum(booked.values(), ZERO) == received:
        return [(k, booked.get(k, ZERO), booked_tax.get(k, ZERO)) for k in keys]
    parts = allocate(received, [gross[k] for k in keys])
    return [(k, part, part - net_of_gross(part, k[1])) for k, part in zip(keys, parts)]


def received_amounts_per_line(received: Decimal, lines: Sequence[Mapping[str, object]],
                              booked: Mapping[tuple, Decimal],
                              booked_tax: Mapping[tuple, Decimal]) -> list[tuple[Decimal, Decimal]]:
    """The (net, tax) each line of a progress or deposit invoice deducts,
    in line order (pure).

    Net and tax are taken per tax group (:func:`received_per_group`: the
    tax the payments booked, the net the rest of what they received) and
    then each shared among the group's lines in proportion to their gross;
    so every group's deductions clear exactly what its interim payment and
    interim tax accounts hold, whatever the number of lines (per-line
    rounding left cents there, and a tax recomputed from the net differs
    from the tax booked on receipt by a cent for some amounts)."""
    parts = [(ZERO, ZERO)] * len(lines)
    for key, group_received, group_tax in received_per_group(received, lines, booked, booked_tax):
        members = [i for i, line in enumerate(lines) if tax_group(line) == key]
        weights = [Decimal(lines[i].get("postotalgross") or ZERO) for i in members]
        nets = allocate(group_received - group_tax, weights)
        taxes = allocate(group_tax, weights)
        for i, net, tax in zip(members, nets, taxes):
            parts[i] = (net, tax)
    return parts


#: The line fields that make a deduction what it is: two deductions alike in
#: these are the same deduction (:func:`rebuild_final_invoice` compares them).
DEDUCTION_FIELDS = ("subinvoice", "title", "unitprice", "postotaltax", "taxrate", "taxcode")


def deduction_signature(lines: Iterable[Mapping[str, object]]) -> list[tuple]:
    """The deductions of a final invoice as comparable tuples, in line order."""
    out = []
    for line in lines:
        if not line.get("isdeduction"):
            continue
        values = []
        for key in DEDUCTION_FIELDS:
            value = line.get(key)
            if isinstance(value, Decimal):
                value = value.normalize()
            elif key == "subinvoice" and value is not None:
                value = int(value)  # type: ignore[call-overload]
            values.append(value)
        out.append(tuple(values))
    return out


def rebuild_final_invoice(header: Mapping[str, object], lines: Sequence[Mapping[str, object]],
                          subs: Sequence[SubInvoice], rounding: str) -> tuple[dict, list[dict]]:
    """A final invoice draft as it is to be finalized *now* (domain-spec §3.8
    step 5): its main lines as they are, and the deductions of its sub
    invoices as they stand at this moment (payments received since the draft
    was built are deducted too; a sub invoice cancelled meanwhile is not).

    Pure: returns a copy of the header with new totals and the lines (main
    lines first, in their order, then the deductions), amounts recomputed
    exactly as the run computes them and checked (:func:`check_invoice`).
    The caller compares :func:`deduction_signature` of old and new lines and
    writes only when they differ. Raises :class:`BuildError` when a sub
    invoice of the project is still a draft."""
    fresh = dict(header)
    main = [dict(line) for line in sorted((line for line in lines if not line.get("isdeduction")),
                                          key=lambda line: (line.get("sequence") or 0, line.get("id") or 0))]
    rebuilt = main + deduction_lines(None, fresh, main, subs)
    _amounts(fresh, rebuilt, rounding)
    _totals(fresh, rebuilt)
    check_invoice(fresh, rebuilt)
    return fresh, rebuilt


def _amounts(header: Mapping[str, object], lines: list[dict], rounding: str, memo: dict | None = None) -> None:
    gross_mode = bool(header.get("grossinvoice"))
    # A line's amounts depend on its quantity, unit price and tax rate only,
    # and the lines of an invoice often share these very objects (the reader
    # shares repeated quantities and prices, the tax decision its rate):
    # each distinct combination of objects is computed once. Keyed by
    # identity, so nothing is hashed and equal values never stand in for
    # each other; each entry keeps its three objects alive, so their ids
    # cannot be reused by other objects while the dict exists. A ``memo``
    # of the caller's spans many invoices (their mode is part of the key).
    computed: dict[tuple[int, int, int, bool], tuple[tuple[Decimal, Decimal, Decimal], tuple[Decimal, ...]]] = \
        {} if memo is None else memo
    for line in lines:
        if line.get("isdeduction"):
            continue  # its amounts are fixed (deduction_lines)
        quantity = Decimal(line["quantity"])
        unit_price = Decimal(line["unitprice"])
        rate = Decimal(line.get("taxrate") or 0)
        key = (id(quantity), id(unit_price), id(rate), gross_mode)
        entry = computed.get(key)
        if entry is None:
            amounts = _line_amounts(quantity, unit_price, rate, gross_mode)
            entry = computed[key] = ((quantity, unit_price, rate), amounts)
        line["postotalnet"], line["postotaltax"], line["postotalgross"], line["unitpricenet"] = entry[1]
    if rounding == "PerTaxGroup" and not gross_mode:
        _round_per_tax_group(lines)


def _line_amounts(quantity: Decimal, unit_price: Decimal, rate: Decimal,
                  gross_mode: bool) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    """(net, tax, gross, unit price net) of one line, rounded per line."""
    if gross_mode:
        gross = round_money(quantity * unit_price)
        net = net_of_gross(gross, rate)
        return net, gross - net, gross, (unit_price * 100 / (100 + rate)).quantize(Decimal("0.0001"))
    net = round_money(quantity * unit_price)
    tax = tax_of(net, rate)
    return net, tax, net + tax, unit_price


def _round_per_tax_group(lines: list[dict]) -> None:
    """Tax rounded once per rate: the group's tax is round(Σ net × rate); the
    cent difference to the per-line taxes goes to the line with the largest
    net amount, so lines still sum to the invoice totals. Deduction lines
    keep the tax they deduct (it was rounded when it was billed or booked)."""
    groups: dict[Decimal, list[dict]] = {}
    for line in lines:
        if not line.get("isdeduction"):
            groups.setdefault(Decimal(line.get("taxrate") or 0), []).append(line)
    for rate, members in groups.items():
        wanted = tax_of(sum((m["postotalnet"] for m in members), ZERO), rate)
        difference = wanted - sum((m["postotaltax"] for m in members), ZERO)
        if difference:
            biggest = max(members, key=lambda m: abs(m["postotalnet"]))
            biggest["postotaltax"] += difference
            biggest["postotalgross"] = biggest["postotalnet"] + biggest["postotaltax"]


def _totals(header: dict, lines: Iterable[dict]) -> None:
    lines = list(lines)
    header["totalnet"] = sum(map(itemgetter("postotalnet"), lines), ZERO)
    header["totaltax"] = sum(map(itemgetter("postotaltax"), lines), ZERO)
    header["grandtotal"] = sum(map(itemgetter("postotalgross"), lines), ZERO)
    header["class"] = "Invoice" if header["grandtotal"] >= 0 else "Credit"
    starts = [line["serviceperiodstart"] for line in lines if line.get("serviceperiodstart")]
    ends = [line["serviceperiodend"] for line in lines if line.get("serviceperiodend")]
    header["serviceperiodstart"] = min(starts) if starts else None
    header["serviceperiodend"] = max(ends) if ends else None


def check_invoice(header: Mapping[str, object], lines: Sequence[Mapping[str, object]]) -> None:
    """Invoice invariants, checked before anything is written (never optional):
    totals equal the sums of the lines, every line's gross is net + tax, and
    every amount has exactly two decimals.

    One pass over the lines recomputes the sums independently of
    :func:`_totals`. "Two decimals" is ``same_quantum(CENT)`` (exponent -2,
    false for NaN and infinities), which needs no ``as_tuple()``."""
    check_amounts(header, [(line["postotalnet"], line["postotaltax"], line["postotalgross"]) for line in lines])


#: The line fields :func:`check_amounts` takes, in its order.
LINE_AMOUNTS = ("postotalnet", "postotaltax", "postotalgross")


def check_amounts(header: Mapping[str, object], amounts: Sequence[tuple[object, object, object]]) -> None:
    """:func:`check_invoice` on the lines' (net, tax, gross) amounts: for
    callers that hold their lines as rows, not dicts."""
    if not amounts:
        raise InvariantError("an invoice needs at least one line")
    total_net = total_tax = total_gross = ZERO
    for triple in amounts:
        net, tax, gross = triple
        if not (isinstance(net, Decimal) and net.same_quantum(CENT) and isinstance(tax, Decimal)
                and tax.same_quantum(CENT) and isinstance(gross, Decimal) and gross.same_quantum(CENT)):
            key, value = next((k, v) for k, v in zip(LINE_AMOUNTS, triple) if not _is_cents(v))
            raise InvariantError(f"line amount {key}={value!r} is not a two-decimal Decimal")
        if gross != net + tax:
            raise InvariantError(f"line gross {gross} != net + tax")
        total_net += net
        total_tax += tax
        total_gross += gross
    for key, total in (("totalnet", total_net), ("totaltax", total_tax), ("grandtotal", total_gross)):
        if header[key] != total:  # type: ignore[comparison-overlap]
            raise InvariantError(f"invoice {key} {header[key]} != sum of lines {total}")
    if header["grandtotal"] != header["totalnet"] + header["totaltax"]:
        raise InvariantError("grand total != net + tax")


def _is_cents(value: object) -> bool:
    return isinstance(value, Decimal) and value.same_quantum(CENT)
