"""Accounting documents: what the DATEV export hands over besides the file.

Each export creates one AccountingDocument per invoice (type Accounts
Receivable Ledger, Status Transferred, locked, TransferredAt) and one
AccountingDocumentItem per exported booking detail, linked through
``BookingDetail``; a detail without an invoice gets a document of its own.
The default mapping is domain-spec §7.5; on top of it, every stored custom
field (``__c``, but not ``ON_`` copies) that exists with the same API name and
value type on BookingDetail and on the document or item is copied (seed 004,
e.g. ``BuCode__c``). A copied value too long for its target field keeps the
detail out of the export (:meth:`DocumentTransfer.problem`) rather than being
cut.

Documents and items are inserted in batches in the caller's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable, Mapping

import sqlalchemy as sa

from engine.booking.postings import counter_account
from engine.config.model import FieldDef, ObjectDef
from engine.domain.errors import Where
from engine.storage.bulk import RowWriter
from engine.storage.context import Context

from .errors import DatevExportError

DOCUMENT_TYPE = "Accounts Receivable Ledger"
#: Items collected before they are inserted.
ITEM_BATCH = 1_000


@dataclass(frozen=True)
class TransferResult:
    """How many documents and items a transfer created."""

    documents: int
    items: int


def custom_copies(source: ObjectDef, target: ObjectDef) -> tuple[tuple[str, FieldDef], ...]:
    """(source key, target field) for every stored custom field of ``source``
    that ``target`` has with the same API name and value type (seed 004).
    ON fields belong to the ON mechanism of source records, not to this copy."""
    out = []
    for fdef in source.fields:
        if not fdef.is_custom or fdef.name.lower().startswith("on_") or not fdef.is_stored:
            continue
        target_field = target.field(fdef.name)
        if target_field is not None and target_field.is_stored and target_field.value_type == fdef.value_type:
            out.append((fdef.key, target_field))
    return tuple(out)


class DocumentTransfer:
    """Collects accounting documents and items for booking details and
    inserts them in batches: one AccountingDocument per invoice (per
    transfer), one AccountingDocumentItem per detail. A detail without an
    invoice gets a document of its own."""

    def __init__(self, conn: sa.Connection, ctx: Context, *, transferred_at: datetime):
        detail_obj = ctx.obj("BookingDetail")
        self.document_obj = ctx.obj("AccountingDocument")
        self.item_obj = ctx.obj("AccountingDocumentItem")
        self.documents_writer = RowWriter(conn, self.document_obj)
        self.items_writer = RowWriter(conn, self.item_obj)
        self.document_copies = custom_copies(detail_obj, self.document_obj)
        self.item_copies = custom_copies(detail_obj, self.item_obj)
        self.transferred_at = transferred_at
        self._documents: dict[object, dict] = {}
        self._pending_documents: list[dict] = []
        self._pending_items: list[tuple[dict, dict]] = []
        self.documents = 0
        self.items = 0

    def problem(self, detail: Mapping[str, object]) -> str | None:
        """Why ``detail`` cannot be transferred (a copied value that does not
        fit its target field), or None."""
        for key, target in self.document_copies + self.item_copies:
            value = detail.get(key)
            if isinstance(value, str) and target.length and len(value) > target.length:
                return (
                    f"{key} value {value!r} is longer than {target.object_name}.{target.name} "
                    f"({target.length} characters)"
                )
        return None

    def add(self, detail: Mapping[str, object]) -> None:
        key = detail.get("invoice") or ("detail", detail["id"])
        document = self._documents.get(key)
        if document is None:
            document = self._document(detail)
            self._documents[key] = document
            self._pending_documents.append(document)
        item = {
            "bookingdetail": detail["id"],
            "amount": detail.get("amount"),
            "accountno": detail.get("accountno"),
            "contraaccountno": counter_account(detail),
            "accountingdate": detail.get("bookingdate"),
            "deliverydate": detail.get("deliverydate") or detail.get("originalbookingdate"),
            "tax": detail.get("taxrate"),
            "taxcode": detail.get("taxcode"),
            "center": detail.get("center"),
            "bookingtext": detail.get("bookingtext"),
        }
        for key_, target in self.item_copies:
            item[target.key] = detail.get(key_)
        self._pending_items.append((document, item))
        if len(self._pending_items) >= ITEM_BATCH:
            self.flush()

    def _document(self, detail: Mapping[str, object]) -> dict:
        document = {
            "invoice": detail.get("invoice"),
            "bookingperiod": detail.get("bookingperiod"),
            "type": DOCUMENT_TYPE,
            "invoiceid": detail.get("invoiceno"),
            "documentdate": detail.get("bookingdate"),
            "customername": detail.get("accountname"),
            "customercity": detail.get("billingcity"),
            "iban": detail.get("iban"),
            "swiftcode": detail.get("bic"),
            "vatid": detail.get("vatid"),
            "currencyisocode": detail.get("currencyisocode"),
            "status": "Transferred",
            "locked": True,
            "transferredat": self.transferred_at,
        }
        for key, target in self.document_copies:
            document[target.key] = detail.get(key)
        return document

    def flush(self) -> None:
        if self._pending_documents:
            self.documents_writer.insert(self._pending_documents, timestamp=self.transferred_at)
            self.documents += len(self._pending_documents)
            for document in self._pending_documents:
                # Later items of the same invoice only need the id.
                ident = document["id"]
                document.clear()
                document["id"] = ident
            self._pending_documents = []
        if self._pending_items:
            items = []
            for document, item in self._pending_items:
                item["accountingdocument"] = document["id"]
                items.append(item)
            self.items_writer.insert(items, timestamp=self.transferred_at)
            self.items += len(items)
            self._pending_items = []


def transfer_documents(
    conn: sa.Connection,
    ctx: Context,
    details: Iterable[Mapping[str, object]],
    *,
    transferred_at: datetime | None = None,
) -> TransferResult:
    """Create the accounting documents of ``details`` (booking detail records
    keyed by lower-case field name): one AccountingDocument per invoice, one
    AccountingDocumentItem per detail, default mapping of domain-spec §7.5
    plus the custom fields shared with BookingDetail. Runs in the caller's
    transaction; raises :class:`DatevExportError` for a detail whose copied
    values do not fit (nothing is inserted then, once the caller rolls back)."""
    transfer = DocumentTransfer(conn, ctx, transferred_at=transferred_at or utc_now())
    for detail in details:
        problem = transfer.problem(detail)
        if problem:
            name = str(detail.get("name") or detail.get("id"))
            raise DatevExportError(f"booking detail {name}: {problem}", where=Where(object="BookingDetail", record=name))
        transfer.add(detail)
    transfer.flush()
    return TransferResult(transfer.documents, transfer.items)


def utc_now() -> datetime:
    """Now in UTC, whole seconds: the transfer time when none is given."""
    return datetime.now(timezone.utc).replace(microsecond=0)
