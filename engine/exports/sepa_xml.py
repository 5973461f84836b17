"""ISO 20022 XML for the SEPA exports: safe parsing, the vendored schemas,
validation, and the text and amount rules of SEPA messages.

Two message types are written by :mod:`engine.exports.sepa`:

* ``pain.008.001.02`` Customer Direct Debit Initiation (SEPA direct debit),
* ``pain.001.001.03`` Customer Credit Transfer Initiation (SEPA credit transfer),

the versions of the SEPA rulebooks that every bank in the SEPA zone accepts.
Their official XSDs are vendored under ``engine/exports/xsd/`` (see the README
there) and every message is validated against its XSD before it may be
written anywhere.

Every XML document this module reads (the XSDs themselves, or a pain file
handed to :func:`parse_xml`) goes through one parser that resolves no
entities, loads no DTD and never touches the network, and any document with a
``DOCTYPE`` is refused outright: neither a pain message nor an XSD needs one,
and a DTD is how external entities (XXE) and entity expansion come in.
"""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal
from functools import lru_cache
from importlib import resources

from lxml import etree

from engine.domain.money import CENT

from .errors import SepaXmlError

#: The two messages: name -> namespace (their XSDs are xsd/<name>.xsd).
PAIN_008 = "pain.008.001.02"
PAIN_001 = "pain.001.001.03"
MESSAGES = {name: f"urn:iso:std:iso:20022:tech:xsd:{name}" for name in (PAIN_008, PAIN_001)}

#: The characters of the SEPA basic Latin character set (EPC "SEPA
#: Requirements for an Extended Character Set", the set every bank takes).
_SEPA_CHARS = re.compile(r"[^A-Za-z0-9/\-?:().,'+ ]")
_SEPA_TEXT = re.compile(r"[A-Za-z0-9/\-?:().,'+ ]+")
_TRANSLITERATION = str.maketrans({
    "Ä": "Ae", "Ö": "Oe", "Ü": "Ue", "ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss",
    "&": "+", "_": "-", "@": "(at)", "\n": " ", "\r": " ", "\t": " ",
})


def safe_parser() -> etree.XMLParser:
    """The parser for every XML document read here: no entity resolution, no
    DTD loading, no network access, no huge trees."""
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                           huge_tree=False, remove_blank_text=False)


def parse_xml(data: bytes, *, what: str = "XML document") -> etree._ElementTree:
    """Parse ``data`` with :func:`safe_parser`; a document that declares a
    ``DOCTYPE`` (and with it possibly entities) is refused with
    :class:`SepaXmlError`, as is malformed XML."""
    try:
        tree = etree.ElementTree(etree.fromstring(data, safe_parser()))
    except etree.XMLSyntaxError as error:
        raise SepaXmlError(f"{what} is not well-formed XML: {error}") from None
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise SepaXmlError(f"{what} declares a DOCTYPE; documents with DTDs or entities are refused")
    return tree


def load_schema_bytes(data: bytes, *, what: str = "XSD") -> etree.XMLSchema:
    """An XML schema from XSD text, parsed with :func:`parse_xml` (so an XSD
    with a DOCTYPE or external entity is refused). Imports and includes are
    refused too: they would make the schema compiler load further documents,
    and the pain schemas are self-contained."""
    tree = parse_xml(data, what=what)
    references = tree.getroot().xpath("//xs:import | //xs:include | //xs:redefine",
                                      namespaces={"xs": "http://www.w3.org/2001/XMLSchema"})
    if references:
        raise SepaXmlError(f"{what} refers to other schema documents ({len(references)}); only self-contained "
                           "schemas are loaded")
    try:
        return etree.XMLSchema(tree)
    except etree.XMLSchemaParseError as error:
        raise SepaXmlError(f"{what} is not a usable XML schema: {error}") from None


@lru_cache(maxsize=None)
def schema(message: str) -> etree.XMLSchema:
    """The vendored official XSD of ``message`` (``pain.008.001.02`` or
    ``pain.001.001.03``), loaded once."""
    if message not in MESSAGES:
        raise KeyError(f"no vendored XSD for {message!r}")
    data = resources.files("engine.exports").joinpath("xsd", f"{message}.xsd").read_bytes()
    return load_schema_bytes(data, what=f"{message}.xsd")


def validation_errors(tree: etree._ElementTree | etree._Element, message: str) -> list[str]:
    """The XSD errors of ``tree`` against ``message``'s schema (empty = valid)."""
    xsd = schema(message)
    if xsd.validate(tree):
        return []
    return [f"line {e.line}: {e.message}" for e in xsd.error_log]


def validate(tree: etree._ElementTree | etree._Element, message: str) -> None:
    """Raise :class:`SepaXmlError` listing the XSD errors unless ``tree`` is valid."""
    errors = validation_errors(tree, message)
    if errors:
        raise SepaXmlError(f"{message} message is not valid against the ISO 20022 XSD: " + "; ".join(errors[:5]))


def serialize(tree: etree._Element) -> bytes:
    """The document as UTF-8 bytes with an XML declaration, indented, ``\\n`` line ends."""
    etree.indent(tree, space="  ")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + etree.tostring(tree, encoding="UTF-8", pretty_print=True)


def read_message(data: bytes) -> tuple[str, etree._ElementTree]:
    """Parse a pain file safely, tell which message it is from its namespace
    and validate it; returns ``(message, tree)``."""
    tree = parse_xml(data, what="SEPA file")
    namespace = etree.QName(tree.getroot()).namespace
    for message, uri in MESSAGES.items():
        if uri == namespace:
            validate(tree, message)
            return message, tree
    raise SepaXmlError(f"SEPA file has the unknown namespace {namespace!r}")


# ---------------------------------------------------------------------------
# Values


def amount_text(value: Decimal) -> str:
    """An amount as the XSD's ActiveOrHistoricCurrencyAndAmount: exactly two
    decimals, no sign, no exponent."""
    quantized = Decimal(value).quantize(CENT)
    if quantized <= 0:
        raise ValueError(f"SEPA amounts are positive, not {quantized}")
    return format(quantized, "f")


def sepa_text(value: object, limit: int) -> str:
    """Free text (names, remittance information) in the SEPA basic character
    set: German umlauts and ß spelled out, other accents dropped, ``&`` as
    ``+``, anything else outside the set as a space; spaces collapsed; cut to
    ``limit`` characters."""
    text = unicodedata.normalize("NFC", str(value or "")).translate(_TRANSLITERATION)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = _SEPA_CHARS.sub(" ", text)
    return " ".join(text.split())[:limit].strip()


def is_sepa_text(value: str, limit: int) -> bool:
    """Whether ``value`` is usable unchanged as an identifier (EndToEndId,
    mandate reference): 1..``limit`` characters of the basic set, not starting
    or ending with a space."""
    return bool(value) and len(value) <= limit and bool(_SEPA_TEXT.fullmatch(value)) and value == value.strip()
