"""The subscription run's invoices as rows: no dict per line.

A batch of the subscription run bills a few thousand subscriptions of a few
items each; building each line as a dict (:func:`engine.billing.build.build_invoice`)
and converting the dicts back into driver rows (:class:`~engine.storage.bulk.RowWriter`)
was about a third of the run's time. Here a line is a list of values in the order
of the line writer's columns (:attr:`RowWriter.keys`), filled where the
dict path would set a key, taxed, priced and totalled by the same functions
(:func:`~engine.billing.build.draft_header`, ``_apply_tax``, ``_line_amounts``,
:func:`~engine.billing.build.check_amounts`) in the same order, so the rows
written are the ones the dict path writes: same values, same errors.

Lines alike share one such row, a *template* (all values but position, item
and invoice); a draft holds each line as (template, item id), and
:mod:`engine.billing.subscription_set` writes them by SQL from the distinct
templates. The items may be raw driver rows
(:mod:`engine.billing.subscription_set_items`, :attr:`LineRows.items`):
templates are then found by the items' raw values and an item is converted
only to make a new template.

:class:`LineRows` covers the ordinary case: no ON field of SubscriptionItem
is copied to the line, rounding per line and a net invoice. Any other
invoice is built by ``build_invoice`` and each of its lines becomes a
template of its own (:meth:`LineRows.from_dicts`); the caller decides the
run's case once (:func:`rows_apply`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from operator import attrgetter
from typing import Any, Mapping, NamedTuple, Sequence

from engine.domain.money import CENT, ZERO

from .build import (
    LINE_AMOUNTS,
    DraftInvoice,
    RunFacts,
    SourceHeader,
    SourceLine,
    _apply_tax,
    _line_amounts,
    build_invoice,
    check_amounts,
    draft_header,
)
from .periods import ONE_TIME, Charge

#: The line fields a line's tax decision may already hold on the dict path
#: (from ON copies only, which rows do not cover): never in the tax view.
_TAX_OUT = ("taxrate", "taxcode", "appliedtaxrule", "vatcategorycode")
_OPTIONAL_ITEM_FIELDS = ("productgroup", "producttaxclass", "unit")
#: The line fields a template fixes: a tax rule may read these and lines still share templates.
_SHARED_FIELDS = frozenset({"title", "quantity", "unitprice", "serviceperiodstart", "serviceperiodend",
                            "billingpractice", "description", "sourceobject", *_OPTIONAL_ITEM_FIELDS, *_TAX_OUT})
_ONE = Decimal(1)
#: Templates kept between batches (the benchmark's month holds about 7,000 after 20,000 subscriptions).
TEMPLATES_KEPT = 20_000


@dataclass
class RowDraft:
    """A draft invoice whose lines are (template, item id) in line order: the
    line is its template's row (values in the line writer's key order) with
    its position, item and invoice (see :mod:`engine.billing.subscription_set`)."""

    header: dict
    lines: list[tuple["LineTemplate", int]]
    sources: list[SourceHeader]


class Due(NamedTuple):
    """One line due: the item (as read: a dict, or a raw row, see
    ``LineRows.items``), one of its charges, and the line's sort key (item
    id, period start, charge number)."""

    item: dict
    charge: Charge
    order: tuple


def _order(due: Due) -> tuple:
    return due.order


@dataclass
class LineTemplate:
    """A taxed line row shared by lines alike (see :meth:`LineRows._template`).
    It holds the charge and the quantity its key names by identity, so that
    their ids cannot be reused while the template lives."""

    row: list[Any]
    charge: Charge
    quantity: object
    amounts: tuple[Decimal, Decimal, Decimal] | None = None  # (net, tax, gross), once priced
    sound: bool = False  # whether the amounts pass check_amounts' per-line part (see LineRows._price)
    #: The row's service period, for the invoice's (set by ``LineRows._template``).
    start: date | None = None
    end: date | None = None
    #: The row's driver values, every column (once converted, see :mod:`engine.billing.subscription_set`),
    #: and the indexes of those not NULL.
    driver: tuple | None = None
    filled: frozenset[int] = frozenset()
    #: Its number in the run's staged templates (``subscription_set.StagedTemplates``), once staged.
    tid: int | None = None


_AMOUNTS, _START, _END = attrgetter("amounts"), attrgetter("start"), attrgetter("end")
_SOUND = attrgetter("sound")


def rows_apply(run: RunFacts, line_copies: Sequence[object]) -> bool:
    """Whether the run's subscription lines can be built as rows: no ON
    copies to the line (their coercion and precedence stay on the dict
    path) and tax rounded per line (per tax group moves cents between lines)."""
    return not line_copies and run.rounding != "PerTaxGroup"


class LineRows:
    """Builds a subscription's draft invoice with rows for lines; see the module docstring."""

    def __init__(self, run: RunFacts, keys: Sequence[str], source_object: str):
        self.run = run
        self.keys = tuple(keys)
        self.width = len(self.keys)
        self.at = {key: index for index, key in enumerate(self.keys)}
        self.source_object = source_object
        criteria = run.tax.criteria
        # The fields the tax decision reads (TaxResolver's context), of the line and of the header.
        line_context = tuple(c.context_field.lower() for c in criteria if c.context_object.lower() == "invoicelineitem")
        self.tax_fields = tuple(f for f in line_context if f not in _TAX_OUT)
        self.header_fields = tuple(c.context_field.lower() for c in criteria
                                   if c.context_object.lower() != "invoicelineitem")
        # A line's values but its position and item are shared through a
        # template; a tax rule reading those (or an ON-only field) would not be.
        self.shared = set(line_context) <= _SHARED_FIELDS
        self.net_at, self.tax_at, self.gross_at = (self.at[key] for key in LINE_AMOUNTS)
        #: Taxed line rows by header tax context, then by their charge, item
        #: fields and practice; kept from batch to batch, up to :data:`TEMPLATES_KEPT`.
        self.templates: dict[tuple, dict[tuple, LineTemplate]] = {}
        self.kept = 0
        #: When set, the items of ``Due`` are raw rows of these
        #: (:class:`~engine.billing.subscription_set_items.NarrowItems`), keyed by their raw values.
        self.items: Any = None

    def new_batch(self) -> None:
        """Between two batches: bounded memory, the templates start afresh when there are many."""
        if self.kept > TEMPLATES_KEPT:
            self.templates, self.kept = {}, 0

    def build(self, source: SourceHeader, due: list[Due], subscription: Mapping[str, object],
              account: Mapping[str, object], account_copies: Mapping[str, object]) -> RowDraft:
        """The draft of one subscription (``source`` without lines, ``due``
        its lines), as ``build_invoice`` builds it: the lines in order, each
        taxed (all lines before any amount, as there), priced per line,
        totalled and checked."""
        header = draft_header(self.run, [source], account, account_copies)
        if header.get("grossinvoice"):
            if self.items is not None:
                due = [Due(self.items.record(d.item), d.charge, d.order) for d in due]
            return self.from_dicts(self._by_dicts(source, due, subscription, account, account_copies))
        due = sorted(due, key=_order)
        decide = self.run.tax.for_header(header)
        header_key = tuple(map(header.get, self.header_fields))
        practice = subscription.get("billingpractice")
        alike = self.templates.get(header_key)  # the templates of this tax context
        if alike is None:
            alike = self.templates[header_key] = {}
        if self.items is not None and self.shared:  # the lookup of _template, inlined: it runs per line
            line_key, templates = self.items.line_key, []
            for d in due:
                found = alike.get((id(d.charge), practice, line_key(d.item)))
                templates.append(found if found is not None
                                 else self._template(d.item, d.charge, practice, header, alike, decide))
        else:
            templates = [self._template(d.item, d.charge, practice, header, alike, decide) for d in due]
        for template in templates:
            if template.amounts is None:
                self._price(template)
        amounts: list[tuple[Decimal, Decimal, Decimal]] = list(map(_AMOUNTS, templates))
        self._totals(header, templates, amounts)
        _check(header, templates, amounts)
        return RowDraft(header, list(zip(templates, [d.order[0] for d in due])), [source])

    def _by_dicts(self, source: SourceHeader, due: list[Due], subscription: Mapping[str, object],
                  account: Mapping[str, object], account_copies: Mapping[str, object]) -> DraftInvoice:
        lines = [SourceLine(self.source_object, d.item["id"], d.order, line_fields(d.item, subscription, d.charge))
                 for d in due]
        whole = SourceHeader(**{**source.__dict__, "lines": lines})
        return build_invoice(self.run, [whole], account, account_copies)

    def from_dicts(self, draft: DraftInvoice) -> RowDraft:
        """A draft built by ``build_invoice``, each line its own template (a full row)."""
        return RowDraft(draft.header, [(LineTemplate(list(map(line.get, self.keys)), None, None),  # type: ignore[arg-type]
                                        line["subscriptionitem"]) for line in draft.lines], draft.sources)

    def _template(self, item: Mapping[str, object], charge: Charge, practice: object, header: dict,
                  alike: dict[tuple, LineTemplate], decide) -> LineTemplate:
        """The taxed row of one charge of an item, shared by every line with
        the same charge, item fields and practice among ``alike`` (the
        templates of the header's tax context): all a line's values but its
        position and item depend on nothing else, and the tax decision reads
        none of those (see ``__init__``)."""
        if self.items is not None:  # a raw row: keyed by its raw values, converted only when new
            key = (id(charge), practice, self.items.line_key(item)) if self.shared else None
            found = alike.get(key) if key is not None else None
            if found is not None:
                return found
            item = self.items.record(item)
            quantity = item.get("quantity")
        else:
            quantity = item.get("quantity")
            key = (id(charge), id(quantity), item.get("title"), item.get("productgroup"), item.get("producttaxclass"),
                   item.get("unit"), item.get("billingtype") == ONE_TIME, practice) if self.shared else None
            found = alike.get(key) if key is not None else None
            if found is not None:
                return found
        row = self._row(item, charge, practice)
        self._tax(decide, header, row)
        template = LineTemplate(row, charge, quantity, start=row[self.at["serviceperiodstart"]],
                                end=row[self.at["serviceperiodend"]])
        if key is not None:
            alike[key] = template
            self.kept += 1
        return template

    def _row(self, item: Mapping[str, object], charge: Charge, practice: object) -> list[Any]:
        """The line's values before tax but for its position and item: what
        ``build_invoice`` makes of :func:`line_fields` (defaults, the fields,
        the link to the source)."""
        at = self.at
        row: list[Any] = [None] * self.width
        row[at["title"]] = item.get("title")
        quantity = item.get("quantity")
        row[at["quantity"]] = quantity if quantity is not None else _ONE
        row[at["unitprice"]] = charge.amount
        row[at["serviceperiodstart"]] = charge.start
        row[at["serviceperiodend"]] = charge.end
        for key in _OPTIONAL_ITEM_FIELDS:
            value = item.get(key)
            if value not in (None, ""):
                row[at[key]] = value
        if item.get("billingtype") != ONE_TIME:
            row[at["billingpractice"]] = practice
        if charge.prorated or len(charge.pieces) > 1:
            row[at["description"]] = describe_pieces(charge)
        row[at["sourceobject"]] = self.source_object
        return row

    def _tax(self, decide, header: dict, row: list[Any]) -> None:
        """The line's tax by the dict path's own step (``_apply_tax`` on the
        fields the decision reads)."""
        at = self.at
        view: dict[str, object] = {f: row[at[f]] for f in self.tax_fields if f in at and row[at[f]] is not None}
        view["serviceperiodstart"] = row[at["serviceperiodstart"]]
        _apply_tax(decide, header, view)
        for key in _TAX_OUT:
            row[at[key]] = view.get(key)

    def _price(self, template: LineTemplate) -> None:
        """Net, tax, gross and unit price net of the template's lines, rounded
        per line (``build._amounts`` of a net invoice), into its row; its
        ``amounts`` are then (net, tax, gross)."""
        at, row = self.at, template.row
        quantity, unit_price = Decimal(row[at["quantity"]]), Decimal(row[at["unitprice"]])
        net, tax, gross, row[at["unitpricenet"]] = _line_amounts(quantity, unit_price, Decimal(row[at["taxrate"]] or 0),
                                                                 False)
        row[self.net_at], row[self.tax_at], row[self.gross_at] = net, tax, gross
        template.amounts = (net, tax, gross)
        # check_amounts' part of one line, once for every line of the template (its values never change).
        template.sound = all(isinstance(value, Decimal) and value.same_quantum(CENT) for value in (net, tax, gross)) \
            and gross == net + tax

    def _totals(self, header: dict, templates: list[LineTemplate],
                amounts: list[tuple[Decimal, Decimal, Decimal]]) -> None:
        """``build._totals``: sums, class and service period of the invoice
        (whose lines are the ``templates``' rows but for position and item)."""
        if amounts:
            nets, taxes, grosses = zip(*amounts)
        else:
            nets = taxes = grosses = ()
        header["totalnet"] = sum(nets, ZERO)
        header["totaltax"] = sum(taxes, ZERO)
        header["grandtotal"] = sum(grosses, ZERO)
        header["class"] = "Invoice" if header["grandtotal"] >= 0 else "Credit"
        starts: list[date] = [start for start in map(_START, templates) if start]
        ends: list[date] = [end for end in map(_END, templates) if end]
        header["serviceperiodstart"] = min(starts) if starts else None
        header["serviceperiodend"] = max(ends) if ends else None


def _check(header: Mapping[str, object], templates: list[LineTemplate],
           amounts: list[tuple[Decimal, Decimal, Decimal]]) -> None:
    """:func:`~engine.billing.build.check_amounts`, its per-line part taken
    from the templates (checked once each when priced, ``LineTemplate.sound``:
    a line's amounts are its template's, which never change): the totals
    are summed again here, apart from ``_totals``, and compared. Anything
    amiss goes to ``check_amounts`` itself, which raises its own error."""
    if not amounts or not all(map(_SOUND, templates)):
        check_amounts(header, amounts)  # raises: no line, or the first line amiss
    total_net = total_tax = total_gross = ZERO
    for net, tax, gross in amounts:
        total_net += net
        total_tax += tax
        total_gross += gross
    if header["totalnet"] != total_net or header["totaltax"] != total_tax or header["grandtotal"] != total_gross \
            or total_gross != total_net + total_tax:
        check_amounts(header, amounts)  # raises the error of the total amiss


def describe_pieces(charge: Charge) -> str:
    """The description of a prorated or split period: its pieces and their prices."""
    return "; ".join(f"{p.start}..{p.end} at {p.unit_price}" for p in charge.pieces)[:4000]


def line_fields(item: Mapping[str, object], subscription: Mapping[str, object], charge: Charge,
                copies: dict | None = None) -> dict:
    """The InvoiceLineItem fields of one charge of an item, for
    ``build_invoice``: the item's ON copies (``copies``, already coerced)
    first, then the engine's fields; the item's product fields, the
    billing practice and the description only where no copy set them."""
    fields = copies if copies is not None else {}
    quantity = item.get("quantity")
    fields.update({
        "title": item.get("title"),
        "quantity": quantity if quantity is not None else _ONE,
        "unitprice": charge.amount,
        "serviceperiodstart": charge.start,
        "serviceperiodend": charge.end,
        "subscriptionitem": item["id"],
    })
    for key in _OPTIONAL_ITEM_FIELDS:
        if item.get(key) not in (None, ""):
            fields.setdefault(key, item[key])
    if item.get("billingtype") != ONE_TIME:
        fields.setdefault("billingpractice", subscription.get("billingpractice"))
    if charge.prorated or len(charge.pieces) > 1:
        fields.setdefault("description", describe_pieces(charge))
    return fields
