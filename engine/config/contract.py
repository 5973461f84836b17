"""The product contract: objects and fields the engine ships and its code relies on.

An org's YAML declares every object in full, so administrators can see and
extend them. The engine, however, is written against a fixed set of product
objects and fields with plain API names (no ``__c``). This module states that
set, as one compact table (``product_spec.txt``), so validate-config can tell
an administrator precisely when a product field is missing or retyped, and so
the namespace rule can tell product names from customer additions.

Each line of the table is ``Object.Field Type`` where Type is a field type,
optionally ``Lookup:Target`` / ``MasterDetail:Target``. A line ``Object kind``
(kind = object, list or hierarchy) introduces an object.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from types import MappingProxyType
from typing import Mapping

from .model import FieldDef, FieldType, ObjectKind


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    type: FieldType
    reference_to: str | None = None

    def describe(self) -> str:
        return f"{self.type.value}" + (f" to {self.reference_to}" if self.reference_to else "")

    def mismatch(self, fdef: FieldDef) -> str | None:
        """Why ``fdef`` does not satisfy this spec, or None."""
        actual = fdef.type
        if actual is FieldType.FORMULA and self.type is not FieldType.FORMULA:
            return f"must be a stored {self.type.value} field, not a formula"
        if actual is not self.type:
            return f"must be {self.describe()}, is {actual.value}"
        if self.reference_to and (fdef.reference_to or "").lower() != self.reference_to.lower():
            return f"must refer to {self.reference_to}, refers to {fdef.reference_to}"
        return None


def _parse(text: str) -> tuple[dict[str, ObjectKind], dict[str, dict[str, FieldSpec]]]:
    kinds: dict[str, ObjectKind] = {}
    fields: dict[str, dict[str, FieldSpec]] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        left, right = line.split()
        if "." not in left:
            kinds[left] = ObjectKind(right)
            fields[left] = {}
            continue
        object_name, field_name = left.split(".", 1)
        type_name, _, target = right.partition(":")
        fields[object_name][field_name.lower()] = FieldSpec(field_name, FieldType(type_name), target or None)
    return kinds, fields


@lru_cache(maxsize=1)
def _table() -> tuple[Mapping[str, ObjectKind], Mapping[str, Mapping[str, FieldSpec]]]:
    text = resources.files("engine.config").joinpath("product_spec.txt").read_text("utf-8")
    kinds, fields = _parse(text)
    return MappingProxyType(kinds), MappingProxyType({k: MappingProxyType(v) for k, v in fields.items()})


def __getattr__(name: str):  # PRODUCT is computed lazily from the table
    if name == "PRODUCT":
        return _table()[1]
    raise AttributeError(name)


def product_fields(object_name: str) -> Mapping[str, FieldSpec] | None:
    """The product fields of a product object (keyed by lower-case name), or None
    when ``object_name`` is not a product object."""
    for name, fields in _table()[1].items():
        if name.lower() == object_name.lower():
            return fields
    return None


def kind_of(object_name: str) -> ObjectKind:
    return _table()[0][object_name]


def is_object(object_name: str) -> bool:
    return kind_of(object_name) is ObjectKind.OBJECT


# Picklist values the engine writes itself; an org may add values but not drop these.
RESERVED_PICKLIST_VALUES: Mapping[tuple[str, str], tuple[str, ...]] = MappingProxyType(
    {
        ("Balance", "WriteOffReason"): ("Missing amount below threshold", "Invoice below threshold"),
    }
)

# Same-name custom fields are carried along these edges when bookings are made
# and transferred (seed 004: Invoice/ILI -> BookingDetail -> AccountingDocument(Item)).
BOOKING_COPY_CHAIN: tuple[tuple[str, str], ...] = (
    ("Invoice", "BookingDetail"),
    ("InvoiceLineItem", "BookingDetail"),
    ("BookingDetail", "AccountingDocument"),
    ("BookingDetail", "AccountingDocumentItem"),
)

# Setting fields that hold the Name of a record of another setting.
SETTING_REFERENCES: tuple[tuple[str, str, str], ...] = (
    ("Template", "Counter", "Counter"),
    ("BusinessEntity", "Counter", "Counter"),
)

# Where a rule criterion without an explicit ``match`` looks for a field of the
# same name (a consultant's custom criterion works without code this way).
RULE_CONTEXTS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "GlAccountRule": ("InvoiceLineItem", "Invoice"),
        "CenterRule": ("InvoiceLineItem", "Invoice"),
        "TaxRule": ("InvoiceLineItem", "Invoice"),
        "CollectiveAccount": ("BookingDetail", "Balance"),
    }
)

# Objects whose records only the engine writes, with the commands that create
# them: their rows carry invariants no record file can keep (gapless numbers,
# balanced postings, balances that add up to their invoice, claims on the
# billed source records). ``metabill load`` refuses them; ``export-records``
# still exports them.
ENGINE_OWNED: Mapping[str, str] = MappingProxyType(
    {
        "Invoice": "metabill invoice-run (drafts), finalize, cancel and partial-credit",
        "InvoiceLineItem": "metabill invoice-run (with their invoices)",
        "InvoiceRun": "metabill invoice-run",
        "NumberRange": "metabill finalize (from the Counter settings)",
        "BookingPeriod": "metabill finalize and the payment commands (when they book)",
        "BookingDetail": "metabill finalize, cancel, payment and write-off",
        "Balance": "metabill finalize, payment register/on-account/refund/import and write-off",
        "AccountingDocument": "metabill export datev",
        "AccountingDocumentItem": "metabill export datev",
        "InvoiceExportHistory": "metabill export sepa-debit and sepa-credit",
        "Entry": "metabill finalize and fix-invoices (cash management)",
        "EntryItem": "metabill finalize and fix-invoices (cash management)",
        "Installment": "metabill finalize and payment-plan (installment plans)",
        "Payment": "the payment commands (cash management)",
        "PaymentEntry": "metabill bank import (cash management)",
        "BankStatement": "metabill bank import (cash management)",
        "PaymentInstrument": "metabill instrument add and instrument from-accounts (IBAN and BIC checked)",
        "Reduction": "the payment commands and partial-credit (cash management)",
    }
)


def engine_owned(object_name: str) -> str | None:
    """The commands that create ``object_name``'s records when only the engine
    writes them (any case), else None."""
    for name, commands in ENGINE_OWNED.items():
        if name.lower() == object_name.lower():
            return commands
    return None
