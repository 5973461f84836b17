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
#: The versions of the German banking industry's current format set (DK, since November 2023);
#: an ExportSetting chooses them (``SepaMessageVersion``, :mod:`.sepa_versions`).
PAIN_008_V08 = "pain.008.001.08"
PAIN_001_V09 = "pain.001.001.09"
MESSAGES = {name: f"urn:iso:std:iso:20022:tech:xsd:{name}" for name in (PAIN_008, PAIN_001, PAIN_008_V08, PAIN_001_V09)}
#: The direct debit messages (export history ``ExportFormat`` of a collection).
DEBIT_MESSAGES = (PAIN_008, PAIN_008_V08)

#: The characters of the SEPA basic Latin character set (EPC "SEPA
#: Requirements for an Extended Character Set", the set every bank takes).
_SEPA_CHARS = re.compile(r"[^A-Za-z0-9/\-?:().,'+ ]")
_SEPA_TEXT = re.compile(r"[A-Za-z0-9/\-?:().,'+ ]+")
_TRANSLITERATION = str.maketrans({
    "Ä": "Ae", "Ö": "Oe", "Ü": "Ue", "ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "ẞ": "SS",
    "&": "+", "_": "-", "@": "(at)", "\n": " ", "\r": " ", "\t": " ",
})

# Transliteration into the basic set (EPC: SEPA requirements for an extended
# character set, "conversion" of Latin, Greek and Cyrillic letters). No
# library: unidecode is GPL-2.0 and text-unidecode has seen no release since
# 2019; the letters SEPA names are written in are few, and a test checks that
# every letter of the Latin, Greek and Cyrillic blocks below comes out as at
# least one letter of the basic set.
#
# Latin letters Unicode does not decompose into a base letter and a mark:
_LATIN_SPECIAL = {
    "Æ": "AE", "æ": "ae", "Œ": "OE", "œ": "oe", "Þ": "TH", "þ": "th", "Ð": "D", "ð": "d", "ı": "i", "ĸ": "k",
    "ſ": "s", "ŉ": "n", "Ĳ": "IJ", "ĳ": "ij", "Ŋ": "N", "ŋ": "n", "ƒ": "f", "Ǝ": "E", "ǝ": "e", "Ə": "E",
    "ə": "e", "Ʒ": "Z", "ʒ": "z", "Ɔ": "O", "ɔ": "o", "Ɛ": "E", "ɛ": "e", "Ɣ": "G", "ɣ": "g", "Ɩ": "I",
    "ɩ": "i", "Ʊ": "U", "ʊ": "u", "Ʋ": "V", "ʋ": "v", "Ƨ": "S", "ƨ": "s", "Ƽ": "5", "ƽ": "5", "Ɂ": "Q", "ɂ": "q",
    "ƿ": "w", "Ƿ": "W", "ȝ": "y", "Ȝ": "Y", "ƍ": "d", "ƛ": "l", "ƪ": "e", "ƺ": "z", "ƻ": "2",
    "ǀ": "l", "ǁ": "ll", "ǂ": "t", "ǃ": "k", "ȸ": "db", "ȹ": "qp", "Ƣ": "OI", "ƣ": "oi", "Ȣ": "OU", "ȣ": "ou",
    "Ʀ": "R", "ƞ": "n", "Ƞ": "N", "ƥ": "p", "Ƥ": "P", "Ʃ": "SH", "ƾ": "ts", "ʔ": "", "ɋ": "q", "Ɋ": "Q",
}
_GREEK = {
    "ALPHA": "A", "BETA": "V", "GAMMA": "G", "DELTA": "D", "EPSILON": "E", "ZETA": "Z", "ETA": "I",
    "THETA": "TH", "IOTA": "I", "KAPPA": "K", "LAMDA": "L", "MU": "M", "NU": "N", "XI": "X", "OMICRON": "O",
    "PI": "P", "RHO": "R", "SIGMA": "S", "FINAL SIGMA": "S", "TAU": "T", "UPSILON": "Y", "PHI": "F", "CHI": "CH",
    "PSI": "PS", "OMEGA": "O",
}
_CYRILLIC = {
    "A": "A", "BE": "B", "VE": "V", "GHE": "G", "DE": "D", "IE": "E", "IO": "E", "ZHE": "ZH", "ZE": "Z",
    "I": "I", "SHORT I": "Y", "KA": "K", "EL": "L", "EM": "M", "EN": "N", "O": "O", "PE": "P", "ER": "R",
    "ES": "S", "TE": "T", "U": "U", "EF": "F", "HA": "KH", "TSE": "TS", "CHE": "CH", "SHA": "SH",
    "SHCHA": "SHCH", "HARD SIGN": "", "YERU": "Y", "SOFT SIGN": "", "E": "E", "YU": "YU", "YA": "YA",
    "UKRAINIAN IE": "YE", "BYELORUSSIAN-UKRAINIAN I": "I", "YI": "YI", "GHE WITH UPTURN": "G", "DJE": "DJ",
    "GJE": "GJ", "JE": "J", "LJE": "LJ", "NJE": "NJ", "TSHE": "C", "KJE": "KJ", "DZHE": "DZ", "DZE": "DZ",
    "SHORT U": "U",
}
_LETTER_NAME = re.compile(r"(LATIN|GREEK|CYRILLIC) (CAPITAL|SMALL) LETTER (.+?)(?: WITH .*)?$")
#: Latin letters named after what they are, not after a base letter.
_LATIN_WORDS = {"EZH": "Z", "ETH": "D", "THORN": "TH", "ENG": "N", "ESH": "SH", "YOGH": "Y", "WYNN": "W",
                "SCHWA": "E", "HWAIR": "HW", "DELTA": "D", "ALPHA": "A", "IOTA": "I", "UPSILON": "U", "GAMMA": "G",
                "OMEGA": "O", "TONE SIX": "B", "TONE TWO": "S", "TONE FIVE": "S", "GLOTTAL STOP": ""}


def _letter(char: str) -> str | None:
    """The basic-Latin spelling of one letter outside ASCII, or None."""
    special = _LATIN_SPECIAL.get(char)
    if special is not None:
        return special
    match = _LETTER_NAME.match(unicodedata.name(char, ""))
    if match is None:
        return None
    script, case, name = match.groups()
    if script == "LATIN":
        spelled = _LATIN_WORDS.get(name)
        if spelled is None:
            # AFRICAN D, TURNED M, U BAR, DOTLESS J, LONG S, MIDDLE-WELSH LL: the letter the name is about.
            plain = [word for word in name.split(" ") if re.fullmatch(r"[A-Z]{1,2}", word)]
            spelled = plain[-1] if plain else _LATIN_WORDS.get(name.split(" ")[0])
    else:
        table = _GREEK if script == "GREEK" else _CYRILLIC
        spelled = table.get(name)
    if spelled is None:
        return None
    return spelled if case == "CAPITAL" else spelled.lower()


def _spell(char: str) -> str | None:
    """One character in basic Latin: ASCII as it is, a letter spelled out
    (marks dropped, ``ŀ`` -> ``l``), a modifier letter dropped; None for
    anything else outside ASCII."""
    if char.isascii():
        return char
    spelled = _letter(char)
    if spelled is not None:
        return spelled
    parts = [c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c)]
    if parts == [char] or not parts:
        return "" if unicodedata.category(char) in ("Lm", "Sk") else None
    out = []
    for part in parts:
        if part.isascii():
            out.append(part)
        elif unicodedata.category(part) in ("Lm", "Sk", "Po") and part != char:
            continue  # an apostrophe or a dot that was part of the letter
        else:
            spelled = _spell(part)
            if spelled is None:
                return None
            out.append(spelled)
    return "".join(out)


def transliterate(text: str) -> str:
    """``text`` with every letter outside ASCII spelled in basic Latin
    (``Łukasz`` -> ``Lukasz``, ``Ørsted`` -> ``Orsted``, ``Müller`` ->
    ``Mueller``, ``Жанна`` -> ``Zhanna``); marks dropped, anything else
    outside ASCII a space (the caller decides what its set keeps)."""
    text = unicodedata.normalize("NFC", text).translate(_TRANSLITERATION)
    out: list[str] = []
    for index, char in enumerate(text):
        spelled = _spell(char)
        if spelled is None:
            out.append(" ")
            continue
        if len(spelled) > 1 and spelled.isupper():
            following = text[index + 1:index + 2]
            if following and following.islower():
                spelled = spelled.capitalize()  # Жанна -> Zhanna, not ZHanna
        out.append(spelled)
    return "".join(out)


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
    set: letters transliterated (:func:`transliterate`: German umlauts and ß
    spelled out, accents dropped, Ł Ø Æ Þ, Greek and Cyrillic spelled in
    Latin letters), ``&`` as ``+``, anything else outside the set as a
    space; spaces collapsed; cut to ``limit`` characters."""
    text = _SEPA_CHARS.sub(" ", transliterate(str(value or "")))
    return " ".join(text.split())[:limit].strip()


def is_sepa_text(value: str, limit: int) -> bool:
    """Whether ``value`` is usable unchanged as an identifier (EndToEndId,
    mandate reference, message and payment ids): 1..``limit`` characters of
    the basic set, not starting or ending with a space or ``/``, and without
    ``//`` (the EPC implementation guidelines forbid both: banks split
    references at slashes)."""
    return (bool(value) and len(value) <= limit and bool(_SEPA_TEXT.fullmatch(value)) and value == value.strip()
            and not value.startswith("/") and not value.endswith("/") and "//" not in value)
