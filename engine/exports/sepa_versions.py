"""Which ISO 20022 version a SEPA export writes, and the current versions built
from the same orders.

An ExportSetting's ``SepaMessageVersion`` chooses:

==========  =====================  ==================================
value       direct debits          credit transfers (invoices, balances)
==========  =====================  ==================================
``Current`` ``pain.008.001.08``    ``pain.001.001.09``
``Legacy``  ``pain.008.001.02``    ``pain.001.001.03``
==========  =====================  ==================================

``Current`` is the German banking industry's format set (DK "Anlage 3",
valid since November 2023, when banks began retiring the 2009 versions)
and the default: an empty value (or no ExportSetting at all) writes it.
``Legacy`` is kept for banks that still need the old files and must be
chosen explicitly (docs: decisions of issue 18).

For the elements these exports write, the current versions differ from the
old ones in three things only: the namespace, the BIC of a financial
institution (``FinInstnId/BIC`` became ``FinInstnId/BICFI``), and the
requested execution date of a credit transfer (``ReqdExctnDt`` became a
choice of ``Dt`` or ``DtTm``). :func:`upgrade` makes exactly these changes to
a message built by :mod:`.sepa_message`, so both versions come from one
builder and carry the same orders; the result is validated against the
vendored XSD of its version like every message.
"""

from __future__ import annotations

from lxml import etree

from .sepa_orders import BALANCES, CREDIT, DEBIT
from .sepa_xml import MESSAGES, PAIN_001, PAIN_001_V09, PAIN_008, PAIN_008_V08

CURRENT, LEGACY = "Current", "Legacy"
VERSIONS = (CURRENT, LEGACY)
DEFAULT_VERSION = CURRENT
_MESSAGES = {
    CURRENT: {DEBIT: PAIN_008_V08, CREDIT: PAIN_001_V09, BALANCES: PAIN_001_V09},
    LEGACY: {DEBIT: PAIN_008, CREDIT: PAIN_001, BALANCES: PAIN_001},
}
#: The message each current version replaces.
_OLD = {PAIN_008_V08: PAIN_008, PAIN_001_V09: PAIN_001}


def message_for(kind: str, version: str | None) -> str:
    """The message name an export of ``kind`` writes under ``version``."""
    return _MESSAGES[version if version in _MESSAGES else DEFAULT_VERSION][kind]


def legacy_of(message: str) -> str:
    """The old message a (possibly current) message is built from."""
    return _OLD.get(message, message)


def upgrade(root: etree._Element, message: str) -> etree._Element:
    """The old-version document ``root`` as ``message`` (a current version):
    a new tree; ``root`` is left as it was."""
    namespace = MESSAGES[message]

    def copy(element: etree._Element, parent: etree._Element | None) -> etree._Element:
        name = etree.QName(element).localname
        if name == "BIC" and etree.QName(element.getparent()).localname == "FinInstnId":
            name = "BICFI"
        tag = f"{{{namespace}}}{name}"
        made = etree.Element(tag, nsmap={None: namespace}) if parent is None else etree.SubElement(parent, tag)
        for key, value in element.attrib.items():
            made.set(key, value)
        if name == "ReqdExctnDt" and len(element) == 0:
            etree.SubElement(made, f"{{{namespace}}}Dt").text = element.text
        else:
            made.text = element.text
            for child in element:
                copy(child, made)
        return made

    return copy(root, None)


__all__ = ["CURRENT", "DEFAULT_VERSION", "LEGACY", "VERSIONS", "legacy_of", "message_for", "upgrade"]
