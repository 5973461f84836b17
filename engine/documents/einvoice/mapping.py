"""The e-invoice mapping: which field feeds which business term, and the code tables.

Declared in YAML: the product's defaults (``defaults.yaml`` beside this
module) overlaid, entry by entry, by the org's ``metadata/einvoice.yaml``
(same layout; ``BT-xx: null`` removes a default). The mapping lives in
``metadata/`` because it is part of the org's data model (it says what its
fields *mean* in the standard, next to the objects that declare them), not a
record of a setting. A term entry is one of::

    BT-10: Account.AccountNumber                       # a field
    BT-10: {field: Invoice.LeitwegId__c, default: "n/a"}  # a field, a text when it is blank
    BT-22: {value: "Es gelten unsere AGB."}            # a fixed text
    BT-49: {field: Account.Email, scheme: EM}          # an electronic address and its scheme

:func:`load_mapping` is pure over the model and the two files; every problem
is a :class:`MappingProblem` with a code of validate-config (E200-E229) and
the YAML location; the same locations travel with each term so a rule
violation found by the validator names the mapping entry that fed it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from engine.config.diagnostics import Location, did_you_mean
from engine.config.model import OrgModel
from engine.config.yamlsrc import YamlDocument, read_yaml

from .terms import COMPUTED, SOURCES, TERMS, field_fits, field_type_name

#: The org's mapping file, relative to the org root.
ORG_FILE = "metadata/einvoice.yaml"
DEFAULTS_FILE = Path(__file__).with_name("defaults.yaml")
DEFAULTS_NAME = "engine/documents/einvoice/defaults.yaml"
SECTIONS = ("version", "validation", "terms", "document_types", "payment_means", "units", "exemption_reasons")
#: Document types XRechnung 3.0 accepts (BR-DE-17) and which of them are credit notes.
DOCUMENT_TYPES = frozenset({"326", "380", "381", "384", "389", "875", "876", "877"})
CREDIT_NOTE_TYPES = frozenset({"381"})
#: UNTDID 4461 payment means this engine writes (what each needs is in :mod:`.build`).
PAYMENT_MEANS = frozenset({"1", "10", "30", "31", "42", "48", "49", "54", "55", "57", "58", "59", "68", "97", "ZZZ"})
#: VAT categories of EN 16931 (UNCL 5305 subset) and those that need an exemption reason.
VAT_CATEGORIES = frozenset({"S", "Z", "E", "AE", "K", "G", "O", "L", "M"})
EXEMPT_CATEGORIES = frozenset({"E", "AE", "K", "G", "O"})
#: Electronic address schemes (EAS) accepted for BT-34-1 / BT-49-1 without a lookup: e-mail, Leitweg-ID, Peppol DE.
ADDRESS_SCHEMES = frozenset({"EM", "0204", "9930", "0088", "0060", "0208", "9925"})


@dataclass(frozen=True, slots=True)
class MappingProblem:
    code: str
    message: str
    location: Location
    hint: str | None = None


@dataclass(frozen=True, slots=True)
class TermSource:
    """Where one business term's value comes from, and where that was said."""

    term: str
    object: str | None
    field: str | None
    value: str | None
    default: str | None
    scheme: str | None
    where: Location


@dataclass(frozen=True)
class EInvoiceMapping:
    terms: Mapping[str, TermSource]
    document_types: Mapping[str, str]
    payment_means: Mapping[str, str]
    units: Mapping[str, str]
    exemption_reasons: Mapping[str, tuple[str, str]]
    validate_at_finalization: bool
    block_finalization: bool
    #: (section, key) -> where the entry was written, for messages.
    locations: Mapping[tuple[str, str], Location] = field(default_factory=dict)
    problems: tuple[MappingProblem, ...] = ()

    def where(self, section: str, key: str = "") -> Location:
        return self.locations.get((section, key)) or self.locations.get((section, "")) or Location(ORG_FILE)

    def unit_code(self, unit: str | None) -> str:
        if unit and unit.strip():
            return self.units.get(unit.strip(), self.units.get(unit.strip().lower(), unit.strip()))
        return self.units.get("default", "C62")


def load_mapping(model: OrgModel) -> EInvoiceMapping:
    """The org's mapping over the defaults, with its problems (never raises
    for anything the files contain)."""
    problems: list[MappingProblem] = []
    defaults, found = read_yaml(DEFAULTS_FILE, DEFAULTS_NAME)
    problems += [MappingProblem("E200", d.message, d.location) for d in found]
    docs = [defaults] if defaults is not None else []
    # The loader read (and reported the YAML problems of) the org's file.
    org = model.extensions.get(ORG_FILE)
    if org is not None and org.data is not None:
        docs.append(org)
    builder = _Builder(model, problems)
    for doc in docs:
        builder.read(doc)
    return builder.result()


class _Builder:
    """Reads the documents in order; later entries replace earlier ones."""

    def __init__(self, model: OrgModel, problems: list[MappingProblem]):
        self.model = model
        self.problems = problems
        self.terms: dict[str, TermSource | None] = {}
        self.tables: dict[str, dict[str, Any]] = {s: {} for s in ("document_types", "payment_means", "units",
                                                                   "exemption_reasons")}
        self.validation = {"at_finalization": True, "block_finalization": False}
        self.locations: dict[tuple[str, str], Location] = {}

    def problem(self, code: str, message: str, where: Location, hint: str | None = None) -> None:
        self.problems.append(MappingProblem(code, message, where, hint))

    def read(self, doc: YamlDocument) -> None:
        data = doc.data
        if not isinstance(data, dict):
            self.problem("E200", "the e-invoice mapping must be a mapping of sections", doc.location(()),
                         f"sections: {', '.join(SECTIONS)}")
            return
        for key, value in data.items():
            if key not in SECTIONS:
                self.problem("E200", f"unknown section '{key}' in the e-invoice mapping", doc.location((key,),
                             key=True), did_you_mean(str(key), SECTIONS) or f"sections: {', '.join(SECTIONS)}")
                continue
            if key == "version" or value is None:
                continue
            if not isinstance(value, dict):
                self.problem("E200", f"section '{key}' must be a mapping", doc.location((key,)))
                continue
            self.locations[(key, "")] = doc.location((key,), key=True)
            if key == "terms":
                for term, entry in value.items():
                    self.read_term(doc, str(term), entry)
            elif key == "validation":
                self.read_validation(doc, value)
            else:
                for name, entry in value.items():
                    self.read_table_entry(doc, key, str(name), entry)

    def read_validation(self, doc: YamlDocument, value: dict) -> None:
        for name, flag in value.items():
            where = doc.location(("validation", name))
            if name not in self.validation:
                self.problem("E200", f"unknown validation setting '{name}'", where,
                             "at_finalization, block_finalization")
            elif not isinstance(flag, bool):
                self.problem("E200", f"validation.{name} must be true or false, not {flag!r}", where)
            else:
                self.validation[name] = flag
                self.locations[("validation", name)] = where

    def read_table_entry(self, doc: YamlDocument, section: str, name: str, entry: Any) -> None:
        where = doc.location((section, name))
        self.locations[(section, name)] = where
        if entry is None:
            self.tables[section].pop(name, None)
            return
        if section == "exemption_reasons":
            if name not in EXEMPT_CATEGORIES:
                self.problem("E206", f"exemption reason for VAT category '{name}', which takes none", where,
                             f"categories with an exemption reason: {', '.join(sorted(EXEMPT_CATEGORIES))}")
                return
            if not isinstance(entry, dict) or not str(entry.get("text") or "").strip():
                self.problem("E206", f"exemption reason of category {name} needs a text (and a VATEX code)", where,
                             '{code: VATEX-EU-AE, text: "Reverse charge"}')
                return
            code = entry.get("code")
            self.tables[section][name] = (str(code) if code else "", str(entry["text"]))
            return
        text = str(entry).strip()
        allowed = {"document_types": DOCUMENT_TYPES, "payment_means": PAYMENT_MEANS}.get(section)
        if allowed is not None and text not in allowed:
            self.problem("E206", f"{section}: '{name}' maps to code '{text}', which is not allowed here", where,
                         f"allowed: {', '.join(sorted(allowed, key=lambda c: (len(c), c)))}")
            return
        if section == "units" and not (1 <= len(text) <= 3 and text.isalnum() and text.upper() == text):
            self.problem("E206", f"units: '{name}' maps to '{text}', not a UN/ECE Rec. 20 code", where,
                         "e.g. C62 (piece), HUR (hour), DAY, MON, ANN, LS (lump sum)")
            return
        self.tables[section][name] = text

    def read_term(self, doc: YamlDocument, term_id: str, entry: Any) -> None:
        where = doc.location(("terms", term_id))
        key_where = doc.location(("terms", term_id), key=True)
        self.locations[("terms", term_id)] = where
        term = TERMS.get(term_id)
        if term is None:
            if term_id in COMPUTED:
                self.problem("E201", f"{term_id} is filled by the engine from {COMPUTED[term_id]}, not mapped",
                             key_where, "remove the entry; the booked invoice is the only source of amounts")
            else:
                self.problem("E201", f"unknown or unsupported business term '{term_id}'", key_where,
                             did_you_mean(term_id, TERMS) or "see docs/einvoice.md for the mappable terms")
            return
        if entry is None:
            self.terms[term_id] = None
            return
        if isinstance(entry, str):
            entry = {"field": entry}
        if not isinstance(entry, dict) or not ({"field", "value"} & set(entry)) or set(entry) - {
                "field", "value", "default", "scheme"}:
            self.problem("E200", f"{term_id}: write a field (Object.Field) or {{field: …, default: …}} "
                         "or {value: …}", where)
            return
        scheme = entry.get("scheme")
        if scheme is not None and (not term.address or str(scheme) not in ADDRESS_SCHEMES):
            self.problem("E206", f"{term_id}: scheme '{scheme}' is not allowed", where,
                         "only electronic addresses (BT-34, BT-49) take a scheme: "
                         + ", ".join(sorted(ADDRESS_SCHEMES)))
            return
        source = TermSource(term_id, None, None, None, _text(entry.get("default")),
                            str(scheme) if scheme is not None else ("EM" if term.address else None), where)
        if "value" in entry:
            self.terms[term_id] = TermSource(term_id, None, None, _text(entry["value"]), source.default,
                                             source.scheme, where)
            return
        path = str(entry["field"])
        object_name, _, field_name = path.partition(".")
        allowed = SOURCES[term.level]
        if object_name not in allowed or not field_name:
            self.problem("E202", f"{term_id} ({term.name}) cannot be read from '{path}'", where,
                         f"write Object.Field with Object one of {', '.join(allowed)}")
            return
        obj = self.model.object(object_name)
        if obj is None:  # the object itself is missing: the metadata checks report that (E080)
            return
        fdef = obj.field(field_name)
        if fdef is None:
            names = [f.name for f in obj.fields] if obj is not None else []
            self.problem("E202", f"{term_id} ({term.name}): {object_name} has no field '{field_name}'", where,
                         did_you_mean(field_name, names))
            return
        if not field_fits(term, fdef):
            self.problem("E203", f"{term_id} ({term.name}) is a {term.kind}, but {object_name}.{fdef.name} is "
                         f"{field_type_name(fdef)}", where, "map a field of a matching type")
            return
        self.terms[term_id] = TermSource(term_id, object_name, fdef.name, None, source.default, source.scheme,
                                         where)

    def result(self) -> EInvoiceMapping:
        terms = {k: v for k, v in self.terms.items() if v is not None}
        terms_where = self.locations.get(("terms", ""), Location(ORG_FILE))
        for term in TERMS.values():
            if term.required and term.id not in terms:
                where = self.locations.get(("terms", term.id), terms_where)
                self.problem("E204", f"required business term {term.id} ({term.name}) is not mapped", where,
                             f"add '{term.id}: {{field: {SOURCES[term.level][0]}.<Field>}}' (or a value)")
        return EInvoiceMapping(terms, dict(self.tables["document_types"]), dict(self.tables["payment_means"]),
                               dict(self.tables["units"]), dict(self.tables["exemption_reasons"]),
                               self.validation["at_finalization"], self.validation["block_finalization"],
                               dict(self.locations), tuple(self.problems))


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


__all__ = ["ADDRESS_SCHEMES", "CREDIT_NOTE_TYPES", "DOCUMENT_TYPES", "EInvoiceMapping", "EXEMPT_CATEGORIES",
           "MappingProblem", "ORG_FILE", "PAYMENT_MEANS", "TermSource", "VAT_CATEGORIES", "load_mapping"]
