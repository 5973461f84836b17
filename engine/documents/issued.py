"""Issued documents are immutable (issue 13, item 3).

When an invoice is finalized, its document is rendered once
(:func:`engine.documents.finalization.issue_documents`), with the data
of that moment (the balance table shows what was prepaid or assigned at
finalization), and stored in the database as :data:`DOCUMENT_OBJECT` records
(kind ``Invoice``, the HTML in parts of at most :data:`PART_LENGTH`
characters, each part carrying the SHA-256 of the whole). The invoice
records that hash in ``DocumentHash`` and its :func:`fingerprint` in
``IssuedFingerprint``. Afterwards ``metabill render`` of the invoice
returns the stored document (its PDF is made from the stored HTML, which is
byte for byte reproducible); later payments never change it. A payment
reminder or a statement would be a new document of another kind, never an
edited invoice. Drafts are rendered fresh every time.

:func:`stored_document` reads a stored document back and checks its hash;
:func:`fingerprint` is the pure function ``metabill audit`` calls to check
that an invoice and its lines are still what was issued.

**The fingerprint** is the SHA-256 (hex) of a canonical JSON text::

    {"invoice": [<INVOICE_FIELDS values>], "lines": [[<LINE_FIELDS values>], ...]}

with the values of :data:`INVOICE_FIELDS` of the invoice and of
:data:`LINE_FIELDS` of each line, read by lower-case key from plain dicts
(database rows), a missing key counting as None. Values are canonical:
None → ``null``; booleans → ``true``/``false``; ``Decimal`` → its plain
normalized text (``Decimal("19.000")`` and ``Decimal("19")`` are both
``"19"``, ``Decimal("100.00")`` is ``"100"``, ``-0`` is ``"0"``); integers →
their text; dates and datetimes → ISO 8601 text; everything else → ``str``.
Each line is the compact JSON array of its values (``separators=(",", ":")``,
ASCII), the lines are sorted as those texts (so neither their ids nor the
order they were read in matter), and the JSON text hashed is exactly
``{"invoice":<array>,"lines":[<line>,<line>,...]}``. Only what is legally fixed at finalization is covered (not the
status, balance, due amounts, export marks, links to later invoices or bank
data, which legitimately change).
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Iterable, Mapping

import sqlalchemy as sa

from engine.storage.context import Context

from .errors import StoredDocumentAltered, invoice_where

DOCUMENT_OBJECT = "InvoiceDocument"
KIND_INVOICE = "Invoice"
FORMAT_HTML = "html"
#: Characters per stored part (the Content field holds at most 100,000).
PART_LENGTH = 100_000

#: Invoice fields the fingerprint covers (lower-case keys of Invoice rows).
INVOICE_FIELDS = (
    "name", "class", "type", "date", "account", "accountname", "currencyisocode", "businessentity", "template",
    "paymentduedate", "serviceperiodstart", "serviceperiodend", "totalnet", "totaltax", "grandtotal",
    "billingstreet", "billingpostalcode", "billingcity", "billingstate", "billingcountry", "billingcountrycode",
)
#: Line fields the fingerprint covers (lower-case keys of InvoiceLineItem rows).
LINE_FIELDS = (
    "sequence", "title", "description", "quantity", "unit", "unitprice", "unitpricenet", "taxrate", "taxcode",
    "postotalnet", "postotaltax", "postotalgross", "isdeduction", "subinvoice", "serviceperiodstart",
    "serviceperiodend",
)


def _decimal(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return "0" if text == "-0" else text


def _iso(value: date) -> str:
    return value.isoformat()


def _same(value: Any) -> Any:
    return value


#: How each type is made canonical (see the module docstring).
_CANONICAL: dict[type, Any] = {type(None): _same, bool: _same, str: _same, Decimal: _decimal, int: str,
                               date: _iso, datetime: _iso}


def canonical(value: Any) -> Any:
    """A value as the fingerprint sees it (see the module docstring)."""
    convert = _CANONICAL.get(type(value))
    if convert is not None:
        return convert(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, Decimal):
        return _decimal(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return str(value)


def _values(record: Mapping[str, Any], keys: tuple[str, ...]) -> str:
    """The record's canonical values of ``keys`` as a JSON array."""
    get = record.get
    return json.dumps([canonical(get(key)) for key in keys], separators=(",", ":"), ensure_ascii=True)


def fingerprint(invoice: Mapping[str, Any], lines: Iterable[Mapping[str, Any]]) -> str:
    """The issued fingerprint of an invoice and its lines (pure; see the
    module docstring for exactly what it covers)."""
    body = sorted(_values(line, LINE_FIELDS) for line in lines)
    text = '{"invoice":' + _values(invoice, INVOICE_FIELDS) + ',"lines":[' + ",".join(body) + "]}"
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def content_hash(content: str) -> str:
    """The SHA-256 (hex) of a document's text, as UTF-8."""
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def document_parts(content: str) -> list[str]:
    """The text in parts of at most :data:`PART_LENGTH` characters (one
    empty part for an empty text)."""
    return [content[start:start + PART_LENGTH] for start in range(0, len(content), PART_LENGTH)] or [""]


# --- reading back ------------------------------------------------------------------------


def stored_document(conn: sa.Connection, ctx: Context, invoice_id: int, *, kind: str = KIND_INVOICE) -> str | None:
    """The stored document of kind ``kind`` of an invoice (its parts joined),
    or None when the invoice has none (a draft, or an invoice finalized
    before documents were stored). :class:`StoredDocumentAltered` when the
    parts do not add up to the hash they carry or the invoice recorded."""
    if ctx.model.object(DOCUMENT_OBJECT) is None:
        return None
    table = ctx.table(DOCUMENT_OBJECT)
    rows = conn.execute(sa.select(table.c.part, table.c.parts, table.c.content, table.c.sha256)
                        .where(table.c.invoice == invoice_id, table.c.kind == kind)
                        .order_by(table.c.id)).all()
    if not rows:
        return None
    digest = rows[-1].sha256
    parts = sorted((r for r in rows if r.sha256 == digest), key=lambda r: int(r.part))
    content = "".join(r.content or "" for r in parts)
    invoice = ctx.table("Invoice")
    recorded = conn.execute(sa.select(invoice.c.name, invoice.c.documenthash)
                            .where(invoice.c.id == invoice_id)).first() if kind == KIND_INVOICE else None
    problems = []
    if [int(r.part) for r in parts] != list(range(1, int(parts[0].parts) + 1)):
        problems.append("parts are missing")
    if content_hash(content) != digest:
        problems.append("its content does not match its SHA-256")
    if recorded is not None and recorded.documenthash not in (None, digest):
        problems.append("its SHA-256 is not the one the invoice recorded")
    if problems:
        name = recorded.name if recorded is not None else invoice_id
        raise StoredDocumentAltered(f"the stored document of invoice {name} was altered: {', '.join(problems)}",
                                    where=invoice_where(str(name)),
                                    hint="restore it from a backup; a stored document is never rewritten")
    return content


__all__ = ["DOCUMENT_OBJECT", "FORMAT_HTML", "INVOICE_FIELDS", "KIND_INVOICE", "LINE_FIELDS", "PART_LENGTH",
           "StoredDocumentAltered", "canonical", "content_hash", "document_parts", "fingerprint", "stored_document"]
