"""The corpus of broken configurations: the acceptance test of validate-config.

Every case copies the sample org into ``tmp_path``, breaks it in one way (a
new file, an exact text edit of a shipped file, or a deleted file), runs
``load_project`` and asserts that

* the expected diagnostic (code, file, line, column; hint, severity or
  message where the case names them) is reported, and
* every *error* of the run lies in a file the case touched (no cascades into
  untouched files), except where a case names another file explicitly.

Positions are given as :class:`At` markers: the line and column of an exact
text in the final file, found by searching the file text (so no line number of
a shipped file is hard-coded), or as explicit ``(line, column)`` for bytes
that cannot be searched as text. ``None`` means a whole-file diagnostic
(no line or column).

``test_all_cases_in_one_org`` then applies every case to a single copy and
asserts that one run reports all of them: validate-config reports every
problem in one pass.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.config.diagnostics import Diagnostic, Severity
from engine.config.loader import LoadResult
from engine.project import load_project

from .orgcopy import AddFile, InsertAfter, Replace, apply_edits, copy_org, find_position

OBJ = "metadata/objects"
SET = "metadata/settings"
REC = "custom_settings"


@dataclass(frozen=True)
class At:
    """The position of the ``occurrence``-th ``needle`` in the final file,
    moved ``delta`` columns to the right."""

    needle: str
    occurrence: int = 1
    delta: int = 0


@dataclass(frozen=True)
class Expect:
    code: str
    file: str
    at: At | tuple[int, int] | None  # None: the whole file (no line/column)
    hint: str | None = None  # exact hint text
    hint_contains: tuple[str, ...] = ()
    message_contains: tuple[str, ...] = ()
    severity: Severity | None = None


@dataclass(frozen=True)
class Case:
    id: str
    edits: tuple
    expects: tuple[Expect, ...]
    also_in: tuple[str, ...] = ()  # untouched files that may legitimately hold errors
    bug: str | None = None  # an engine bug: the case is a strict xfail
    extra: object = None  # optional callable(result) with further assertions
    single_code: bool = False  # the expected code appears exactly once in the run


def text(source: str) -> str:
    return textwrap.dedent(source).lstrip("\n")


def custom_object(name: str, fields: str, *, extra: str = "") -> str:
    """A custom object file; ``fields`` are the lines under ``fields:``."""
    return (
        f"version: 1\nobject: {name}\nlabel: {name.replace('_', ' ')}\n{extra}fields:\n"
        + textwrap.indent(text(fields), "  ")
    )


def records(setting: str, *rows: str) -> str:
    """A records file; each row is written as ``  - Key: value`` lines."""
    body = "".join(textwrap.indent(text(r), "    ").replace("    ", "  - ", 1) for r in rows)
    return f"version: 1\nsetting: {setting}\nrecords:\n" + body


def filter_records(*rows: str) -> str:
    return records("Filter", *rows)


def controlled_source(name: str, suffix: str = "", *, override: dict[str, str] | None = None,
                      skip: tuple[str, ...] = ()) -> str:
    """A custom object with every controlling field a single-object filter
    reads (with ``suffix``); ``override`` replaces definitions, ``skip`` omits."""
    definitions = {
        "ON_Account": "{type: Text, length: 40}",
        "ON_ServiceDate": "{type: Date}",
        "ON_Invoice": "{type: Lookup, to: Invoice}",
        "ON_LastInvoiceRun": "{type: Lookup, to: InvoiceRun}",
        "ON_InvoiceBuildError": "{type: Text, length: 255}",
        "ON_IsItem": "{type: Checkbox}",
        "ON_Title": "{type: Text, length: 255}",
        "ON_UnitPrice": "{type: Currency}",
    }
    definitions.update(override or {})
    lines = [f"{base}{suffix}__c: {spec}" for base, spec in definitions.items() if base not in skip]
    return custom_object(name, "\n".join(lines) + "\n")


# --- the cases -----------------------------------------------------------------------

CASES: list[Case] = []


def case(id: str, edits, *expects: Expect, **options) -> None:
    CASES.append(Case(id, tuple(edits), tuple(expects), **options))


def _first_label_kept(result: LoadResult) -> None:
    obj = result.model.object("Case02_DupKey__c")
    assert obj is not None and obj.label == "First label"


# YAML level -------------------------------------------------------------------------

f = f"{OBJ}/Case01_Syntax__c.yaml"
case("yaml-syntax-error",
     [AddFile(f, "version: 1\nobject: Case01_Syntax__c\n  label: Bad indent\nfields: {}\n")],
     Expect("E002", f, At("label: Bad", delta=5), message_contains=("mapping values are not allowed",)))

f = f"{OBJ}/Case02_DupKey__c.yaml"
case("duplicate-key",
     [AddFile(f, "version: 1\nobject: Case02_DupKey__c\nlabel: First label\nlabel: Second label\n"
                 "fields:\n  Note__c: {type: Text, length: 20}\n")],
     Expect("E003", f, At("label: Second"), hint="remove or rename one of the two entries",
            message_contains=("duplicate key 'label' (first defined at line 3)",)),
     extra=_first_label_kept)

f = f"{OBJ}/Case22_Bomb__c.yaml"
case("yaml-bomb-anchors-aliases",
     [AddFile(f, text("""
        version: 1
        object: Case22_Bomb__c
        label: Bomb
        meta:
          a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
          b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
          c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
          d: [*c, *c, *c, *c, *c, *c, *c, *c, *c]
        fields: {}
        """))],
     Expect("E005", f, At("&a"), message_contains=("anchors (&a)",)))

f = f"{OBJ}/Case23_Big__c.yaml"
case("oversized-file",
     [AddFile(f, "version: 1\nobject: Case23_Big__c\nlabel: Big\nfields: {}\n"
                 + ("# " + "x" * 1022 + "\n") * 1100)],
     Expect("E004", f, None, message_contains=("the limit is 1,048,576 bytes",)))

f = f"{OBJ}/Case24_Binary__c.yaml"
case("binary-file",
     [AddFile(f, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10")],
     Expect("E001", f, None, message_contains=("NUL bytes",)))

f = f"{OBJ}/Case25_Latin1__c.yaml"
case("not-utf8",
     [AddFile(f, b"version: 1\nobject: Case25_Latin1__c\nlabel: Caf\xe9 order\nfields: {}\n")],
     Expect("E001", f, (3, 11), hint="save the file as UTF-8", message_contains=("byte 0xe9",)))

f = f"{OBJ}/Case26_Empty__c.yaml"
case("empty-file", [AddFile(f, "")], Expect("E006", f, (1, 1), message_contains=("empty",)))

f = f"{OBJ}/Case26b_Comments__c.yaml"
case("comments-only-file", [AddFile(f, "# nothing here yet\n\n")], Expect("E006", f, (1, 1)))

f = f"{OBJ}/Case27_List__c.yaml"
case("top-level-list",
     [AddFile(f, "- object: Case27_List__c\n- label: List\n")],
     Expect("E006", f, (1, 1), message_contains=("not list",)))

f = f"{OBJ}/Case28_TwoDocs__c.yaml"
case("two-documents",
     [AddFile(f, "version: 1\nobject: Case28_TwoDocs__c\nlabel: Two\nfields: {}\n---\nobject: Case28_Second__c\n")],
     Expect("E007", f, At("---")))

f = f"{OBJ}/Case29_Tag__c.yaml"
case("explicit-python-tag",
     [AddFile(f, 'version: 1\nobject: Case29_Tag__c\nlabel: !!python/object/apply:os.system ["echo hi"]\nfields: {}\n')],
     Expect("E005", f, At("!!python"), message_contains=("explicit YAML tags",)))

f = f"{OBJ}/Case30_Deep__c.yaml"
case("deep-nesting",
     [AddFile(f, "version: 1\nobject: Case30_Deep__c\nlabel: Deep\nmeta: " + "[" * 50 + "]" * 50 + "\nfields: {}\n")],
     # the 40th opening bracket is the first node nested deeper than 40 levels
     Expect("E005", f, At("[[[", delta=39), message_contains=("nesting deeper than 40 levels",)))

f = f"{OBJ}/Case31_Complex__c.yaml"
case("complex-key",
     [AddFile(f, "version: 1\nobject: Case31_Complex__c\nlabel: Complex\nmeta:\n  ? [a, b]\n  : 1\nfields: {}\n")],
     Expect("E005", f, At("[a, b]"), message_contains=("complex",)))

f = f"{OBJ}/Case32_LongValue__c.yaml"
case("value-over-100000-characters",
     [AddFile(f, "version: 1\nobject: Case32_LongValue__c\nlabel: Long\ndescription: " + "y" * 100_001 + "\nfields: {}\n")],
     Expect("E004", f, At("yyy"), message_contains=("100,001 characters",)))

f = f"{OBJ}/notes.json"
case("non-yaml-file-in-objects",
     [AddFile(f, '{"note": "not metadata"}\n')],
     Expect("W014", f, None, severity=Severity.WARNING))

# Schema level -----------------------------------------------------------------------

f = f"{OBJ}/Case03_UnknownKey__c.yaml"
case("unknown-key-did-you-mean",
     [AddFile(f, custom_object("Case03_UnknownKey__c", "Code__c: {type: Text, lenght: 20}\n"))],
     Expect("E010", f, At("lenght"), hint="did you mean length?", message_contains=("unknown key 'lenght'",)))

f = f"{OBJ}/Case03b_TopKey__c.yaml"
case("unknown-top-level-key",
     [AddFile(f, "version: 1\nobject: Case03b_TopKey__c\nlable: Top\nlabel: Top\nfields: {}\n")],
     Expect("E010", f, At("lable"), hint="did you mean label?"))

f = f"{OBJ}/Case04_Missing__c.yaml"
case("missing-required-key-to",
     [AddFile(f, custom_object("Case04_Missing__c", "Parent__c: {type: Lookup, relationship_name: Case04Children}\n"))],
     Expect("E011", f, At("{type: Lookup"), message_contains=("required key 'to'", "Lookup")))

f = f"{OBJ}/Case04b_NoType__c.yaml"
case("missing-required-key-type",
     [AddFile(f, custom_object("Case04b_NoType__c", "Note__c: {length: 20}\n"))],
     Expect("E011", f, At("{length"), message_contains=("required key 'type'",)))

f = f"{OBJ}/Case05_WrongType__c.yaml"
case("wrong-value-type",
     [AddFile(f, custom_object("Case05_WrongType__c", 'Flag__c: {type: Checkbox, required: "yes"}\n'))],
     Expect("E012", f, At('"yes"'), message_contains=("expected true or false", "'yes'")))

f = f"{OBJ}/Case06_BadEnum__c.yaml"
case("bad-enum-did-you-mean",
     [AddFile(f, custom_object("Case06_BadEnum__c", "Note__c: {type: Txt, length: 20}\n"))],
     Expect("E013", f, At("Txt"), hint="did you mean Text?"))

f = f"{OBJ}/Case42_AutoNum__c.yaml"
case("autonumber-field-without-format",
     [AddFile(f, custom_object("Case42_AutoNum__c", "Seq__c: {type: AutoNumber}\n"))],
     Expect("E011", f, At("{type: AutoNumber"), message_contains=("'format'",)))

f = f"{OBJ}/Case42b_AutoName__c.yaml"
case("autonumber-name-field-without-format",
     [AddFile(f, custom_object("Case42b_AutoName__c", "Note__c: {type: Text, length: 20}\n",
                               extra="name_field: {type: AutoNumber, label: Number}\n"))],
     Expect("E011", f, At("{type: AutoNumber"), message_contains=("format",)))

f = f"{OBJ}/Case46_Length__c.yaml"
case("text-length-300",
     [AddFile(f, custom_object("Case46_Length__c", "Note__c: {type: Text, length: 300}\n"))],
     Expect("E013", f, At("300"), message_contains=("at most 255",)))

# Resolution: names, types, references -------------------------------------------------

f = f"{OBJ}/Case07_Lookup__c.yaml"
case("unknown-lookup-target",
     [AddFile(f, custom_object("Case07_Lookup__c", "Customer__c: {type: Lookup, to: Acount}\n"))],
     Expect("E040", f, At("Acount"), hint="did you mean Account?"))

f = f"{OBJ}/zz_case15_account.yaml"
case("duplicate-object-name-differing-in-case",
     [AddFile(f, "version: 1\nobject: account\nlabel: Account again\nfields: {}\n")],
     Expect("E020", f, At("account"), message_contains=("first in metadata/objects/Account.yaml",)))

f = f"{OBJ}/Case16_DupField__c.yaml"
case("duplicate-field-differing-in-case",
     [AddFile(f, custom_object("Case16_DupField__c", "Amount__c: {type: Number}\namount__c: {type: Text}\n"))],
     Expect("E021", f, At("amount__c:"), message_contains=("already defined as 'Amount__c'",)))

f = f"{OBJ}/Case16b_Implicit__c.yaml"
case("implicit-field-declared",
     [AddFile(f, custom_object("Case16b_Implicit__c", "name: {type: Text}\n"))],
     Expect("E021", f, At("name:"), message_contains=("implicit (Name)",)))

f = f"{OBJ}/Case17_Plain__c.yaml"
case("custom-object-field-without-suffix",
     [AddFile(f, custom_object("Case17_Plain__c", "Note: {type: Text, length: 20}\n"))],
     Expect("E030", f, At("Note:"), hint="rename it to Note__c"))

f = f"{OBJ}/Case18_On__c.yaml"
case("on-field-without-suffix",
     [AddFile(f, custom_object("Case18_On__c", "ON_Region: {type: Text, length: 20}\n"))],
     Expect("E030", f, At("ON_Region:"), hint="rename it to ON_Region__c",
            message_contains=("ON field 'ON_Region'",)))

f = f"{OBJ}/Case19Widget.yaml"
case("custom-object-without-suffix",
     [AddFile(f, "version: 1\nobject: Case19Widget\nlabel: Widget\nfields:\n  Size: {type: Number}\n")],
     Expect("E030", f, At("Case19Widget"), hint_contains=("rename it to Case19Widget__c",)),
     single_code=True)  # one finding for the object, not one per field

f = f"{OBJ}/Account.yaml"
case("plain-field-on-product-object",
     [InsertAfter(f, "fields:", "  Loyalty: {type: Text, length: 40, label: Loyalty level}")],
     Expect("E030", f, At("Loyalty:"), hint="rename it to Loyalty__c",
            message_contains=("not a product field of Account",)))

f = f"{OBJ}/Case21_BadName__c.yaml"
case("invalid-api-name",
     [AddFile(f, custom_object("Case21_BadName__c", "Bad__Name__c: {type: Text, length: 20}\n"))],
     Expect("E031", f, At("Bad__Name__c"), message_contains=("not a valid API name",)))

f = f"{OBJ}/Case21b_Digit__c.yaml"
case("invalid-api-name-leading-digit",
     [AddFile(f, custom_object("Case21b_Digit__c", "1st__c: {type: Text, length: 20}\n"))],
     Expect("E031", f, At("1st__c")))


def _no_schema_pattern_error(result: LoadResult) -> None:
    file = f"{OBJ}/Case21c_FlowName__c.yaml"
    wrong = [d for d in result.diagnostics if d.location.file == file and d.code != "E031"]
    assert not wrong, _show(wrong)


f = f"{OBJ}/Case21c_FlowName__c.yaml"
case("invalid-field-name-reported-once-as-e031",
     [AddFile(f, "version: 1\nobject: Case21c_FlowName__c\nlabel: Flow\n"
                 "fields: {Ok__c: {type: Text, length: 20}, 2nd__c: {type: Text, length: 20}}\n")],
     Expect("E031", f, At("2nd__c")),
     extra=_no_schema_pattern_error)

r = f"{REC}/Filter_case21d.yaml"
case("invalid-record-key-is-e031-at-the-key",
     [AddFile(r, filter_records("""
        Name: Case21d Filter
        Target: Order
        ChildRelation: OrderItems
        UseCase: Generic
        9Lives: x
        """))],
     Expect("E031", r, At("9Lives")))

f = f"{OBJ}/Case43_Default__c.yaml"
case("default-not-fitting-field",
     [AddFile(f, custom_object("Case43_Default__c", 'Qty__c: {type: Number, precision: 5, scale: 0, default: "1.5"}\n'))],
     Expect("E013", f, At('"1.5"'), message_contains=("default of Case43_Default__c.Qty__c", "decimal places")))

f = f"{OBJ}/Case44_LookupSetting__c.yaml"
case("lookup-to-a-setting",
     [AddFile(f, custom_object("Case44_LookupSetting__c", "Filter__c: {type: Lookup, to: Filter}\n"))],
     Expect("E043", f, At("to: Filter", delta=4)))

f = f"{OBJ}/Case45_KeyType__c.yaml"
case("key-not-applicable-to-type",
     [AddFile(f, custom_object("Case45_KeyType__c", "Due__c: {type: Date, length: 10}\n"))],
     Expect("E010", f, At("length"), message_contains=("'length' does not apply to Date fields",)))

f = f"{OBJ}/Case45b_SparseText__c.yaml"
case("sparse-on-a-non-lookup",
     [AddFile(f, custom_object("Case45b_SparseText__c", "Code__c: {type: Text, length: 10, sparse: true}\n"))],
     Expect("E010", f, At("sparse"), message_contains=("'sparse' does not apply to Text fields",)))

o, r = f"{OBJ}/Case41b_SparseControl__c.yaml", f"{REC}/Filter_case41b.yaml"
case("sparse-on-invoice-lookup-the-run-searches-empty",
     [AddFile(o, controlled_source("Case41b_SparseControl__c",
                                   override={"ON_Invoice": "{type: Lookup, to: Invoice, sparse: true}"})),
      AddFile(r, filter_records("""
        Name: Case41b Filter
        Target: Case41b_SparseControl__c
        UseCase: Generic
        """))],
     Expect("W063", o, At("ON_Invoice__c"), severity=Severity.WARNING,
            message_contains=("is sparse", "the invoice run selects the records it leaves empty"),
            hint_contains=("remove 'sparse: true'",)))

f = f"{OBJ}/Case57_Rel__c.yaml"
case("duplicate-child-relationship-name",
     [AddFile(f, custom_object("Case57_Rel__c", text("""
        Buyer__c: {type: Lookup, to: Account, relationship_name: Case57Links}
        Payer__c: {type: Lookup, to: Account, relationship_name: Case57Links}
        """)))],
     Expect("E023", f, At("Case57Links", occurrence=2)))

# Formulas -------------------------------------------------------------------------------

f = f"{OBJ}/Case08_FormulaQuoted__c.yaml"
case("formula-syntax-error-quoted",
     [AddFile(f, custom_object("Case08_FormulaQuoted__c", text("""
        Amount__c: {type: Number, scale: 2}
        Double__c: {type: Formula, returns: Number, expression: "Amount__c + * 2"}
        """)))],
     Expect("E050", f, At("* 2"), message_contains=("unexpected '*'",)))

f = f"{OBJ}/Case09_FormulaBlock__c.yaml"
case("formula-syntax-error-block",
     [AddFile(f, custom_object("Case09_FormulaBlock__c", text("""
        Amount__c: {type: Number, scale: 2}
        Total__c:
          type: Formula
          returns: Number
          expression: |
            IF(Amount__c > 0,
               Amount__c + * 2,
               0)
        """)))],
     Expect("E050", f, At("* 2"), message_contains=("unexpected '*'",)))

f = f"{OBJ}/Case09b_FormulaSingle__c.yaml"
case("formula-syntax-error-single-quoted",
     [AddFile(f, custom_object("Case09b_FormulaSingle__c", text("""
        Amount__c: {type: Number, scale: 2}
        Double__c: {type: Formula, returns: Number, expression: 'Amount__c + * 2'}
        """)))],
     Expect("E050", f, At("* 2")))

f = f"{OBJ}/Case09c_FormulaFolded__c.yaml"
case("formula-syntax-error-folded-block",
     [AddFile(f, custom_object("Case09c_FormulaFolded__c", text("""
        Amount__c: {type: Number, scale: 2}
        Total__c:
          type: Formula
          returns: Number
          expression: >-
            IF(Amount__c > 0,
            Amount__c + * 2,
            0)
        """)))],
     Expect("E050", f, At("* 2")))

f = f"{OBJ}/Case09d_FormulaEscapes__c.yaml"
case("formula-syntax-error-quoted-with-escapes",
     [AddFile(f, custom_object("Case09d_FormulaEscapes__c", text("""
        Amount__c: {type: Number, scale: 2}
        Label__c: {type: Formula, returns: Text, expression: "IF(Amount__c > 0, \\"pos\\", \\"neg\\"))"}
        """)))],
     # the second ")" closes nothing; the four escape characters before it must not shift the column
     Expect("E050", f, At("))", delta=1)))

f = f"{OBJ}/Case09e_FormulaPlainLines__c.yaml"
case("formula-syntax-error-plain-multiline",
     [AddFile(f, custom_object("Case09e_FormulaPlainLines__c", text("""
        Amount__c: {type: Number, scale: 2}
        Total__c:
          type: Formula
          returns: Number
          expression: IF(Amount__c > 0,
            Amount__c + * 2, 0)
        """)))],
     Expect("E050", f, At("* 2")))

f = f"{OBJ}/Case09f_FormulaUnicodeEscape__c.yaml"
case("formula-syntax-error-quoted-with-unicode-escape",
     [AddFile(f, custom_object("Case09f_FormulaUnicodeEscape__c", text("""
        Label__c: {type: Formula, returns: Text, expression: "\\"Caf\\u00e9\\" & * \\"x\\""}
        """)))],
     Expect("E050", f, At("* ")))

f = f"{OBJ}/Case10_FormulaUnknown__c.yaml"
case("formula-unknown-field",
     [AddFile(f, custom_object("Case10_FormulaUnknown__c", text("""
        Amount__c: {type: Number, scale: 2}
        Double__c: {type: Formula, returns: Number, expression: "Amout__c * 2"}
        """)))],
     Expect("E051", f, At("Amout__c"), hint="did you mean Amount__c?"))

f = f"{OBJ}/Case10b_FormulaFunction__c.yaml"
case("formula-unknown-function",
     [AddFile(f, custom_object("Case10b_FormulaFunction__c", text("""
        Amount__c: {type: Number, scale: 2}
        Rounded__c: {type: Formula, returns: Number, expression: "1 + ROUNDUP(Amount__c, 0)"}
        """)))],
     Expect("E051", f, At("ROUNDUP"), message_contains=("unknown function ROUNDUP",)))

f = f"{OBJ}/Case11_FormulaType__c.yaml"
case("formula-type-error",
     [AddFile(f, custom_object("Case11_FormulaType__c", text("""
        Amount__c: {type: Number, scale: 2}
        Code__c: {type: Text, length: 20}
        Mixed__c: {type: Formula, returns: Number, expression: "Amount__c * Code__c"}
        """)))],
     # the operator that cannot combine its operands
     Expect("E052", f, At("* Code__c"), message_contains=("'*' cannot combine Amount__c (Number) and Code__c (Text)",)))

f = f"{OBJ}/Case11b_FormulaReturns__c.yaml"
case("formula-declared-type-mismatch",
     [AddFile(f, custom_object("Case11b_FormulaReturns__c", text("""
        Code__c: {type: Text, length: 20}
        Size__c: {type: Formula, returns: Number, expression: "Code__c"}
        """)))],
     Expect("E052", f, At('"Code__c"'), hint="wrap the expression in VALUE()",
            message_contains=("formula returns Text but the field is declared Number",)))

f = f"{OBJ}/Case12_FormulaCycle__c.yaml"
case("formula-cycle",
     [AddFile(f, custom_object("Case12_FormulaCycle__c", text("""
        First__c: {type: Formula, returns: Number, expression: "Second__c + 1"}
        Second__c: {type: Formula, returns: Number, expression: "First__c + 1"}
        """)))],
     # each formula is reported at its reference that leads into the cycle
     Expect("E053", f, At("Second__c + 1"),
            message_contains=("formula cycle: Case12_FormulaCycle__c.First__c -> Case12_FormulaCycle__c.Second__c",)),
     Expect("E053", f, At("First__c + 1"), message_contains=("formula cycle",)))

f = f"{OBJ}/Case12b_FormulaLong__c.yaml"
case("formula-too-long",
     [AddFile(f, custom_object("Case12b_FormulaLong__c",
                               'Long__c: {type: Formula, returns: Number, expression: "' + "1 + " * 1000 + '1"}\n'))],
     # at the first character past the limit (after the opening quote)
     Expect("E054", f, At('"1 + 1 + ', delta=1 + 3900), message_contains=("at most 3900",)))

# Filters and controlling fields ------------------------------------------------------------

o, r = f"{OBJ}/Case13_SubSource__c.yaml", f"{REC}/Filter_case13.yaml"
case("filter-suffix-sub-missing-one-field",
     [AddFile(o, controlled_source("Case13_SubSource__c", "Sub", skip=("ON_Account",))
              + "  ON_Account__c: {type: Text, length: 40}\n"),
      AddFile(r, filter_records("""
        Name: Case13 Sub Filter
        Target: Case13_SubSource__c
        UseCase: Generic
        TransactionalSuffix: Sub
        """))],
     Expect("E060", r, At("Target: Case13_SubSource__c", delta=8),
            hint_contains=("ON_Account__c exists", "add ON_AccountSub__c"),
            message_contains=("Case13_SubSource__c.ON_AccountSub__c",)),
     single_code=True)

o, r = f"{OBJ}/Case14_ManySource__c.yaml", f"{REC}/Filter_case14.yaml"
case("filter-wrong-suffix-many-fields",
     [AddFile(o, controlled_source("Case14_ManySource__c", "Sub")),
      AddFile(r, filter_records("""
        Name: Case14 Typo Filter
        Target: Case14_ManySource__c
        UseCase: Generic
        TransactionalSuffix: Sbu
        """))],
     Expect("E060", r, At("Target: Case14_ManySource__c", delta=8),
            hint="Case14_ManySource__c has them with the suffix 'Sub': is TransactionalSuffix 'Sbu' right?",
            message_contains=("ON_AccountSbu__c", "ON_UnitPriceSbu__c")),
     single_code=True)  # one combined finding, not eight

o, r = f"{OBJ}/Case40_WriteBack__c.yaml", f"{REC}/Filter_case40.yaml"
case("write-back-controlling-field-is-formula",
     [AddFile(o, controlled_source("Case40_WriteBack__c",
                                   override={"ON_InvoiceBuildError": '{type: Formula, returns: Text, expression: "Name"}'})),
      AddFile(r, filter_records("""
        Name: Case40 Filter
        Target: Case40_WriteBack__c
        UseCase: Generic
        """))],
     Expect("E062", o, At("ON_InvoiceBuildError__c"), message_contains=("written back",)))

o, r = f"{OBJ}/Case41_WrongControl__c.yaml", f"{REC}/Filter_case41.yaml"
case("controlling-field-of-wrong-type",
     [AddFile(o, controlled_source("Case41_WrongControl__c", override={"ON_ServiceDate": "{type: Text, length: 20}"})),
      AddFile(r, filter_records("""
        Name: Case41 Filter
        Target: Case41_WrongControl__c
        UseCase: Generic
        """))],
     Expect("E061", o, At("ON_ServiceDate__c"), message_contains=("holds text", "needs date")))

r = f"{REC}/Filter_case39.yaml"
case("unknown-child-relationship",
     [AddFile(r, filter_records("""
        Name: Case39 Filter
        Target: Order
        ChildRelation: OrderItem
        UseCase: Generic
        """))],
     Expect("E042", r, At("OrderItem"), hint_contains=("OrderItems",)))

r = f"{REC}/Filter_case39b.yaml"
case("filter-unknown-target",
     [AddFile(r, filter_records("""
        Name: Case39b Filter
        Target: Oder
        UseCase: Generic
        """))],
     Expect("E040", r, At("Oder"), hint="did you mean Order?"))

r = f"{REC}/Filter_case56.yaml"
case("filter-condition-syntax-error",
     [AddFile(r, filter_records("""
        Name: Case56 Filter
        Target: Order
        ChildRelation: OrderItems
        UseCase: Generic
        Condition: "Status = 'Activated' AND"
        """))],
     # just past the end of the condition text (where the closing quote is)
     Expect("E056", r, At("AND\"", delta=3), message_contains=("ends unexpectedly",)))

r = f"{REC}/Filter_case57.yaml"
case("filter-condition-unknown-field",
     [AddFile(r, filter_records("""
        Name: Case57 Filter
        Target: Order
        ChildRelation: OrderItems
        UseCase: Generic
        Condition: "Account.Nme = 'x'"
        """))],
     Expect("E057", r, At("Nme"), hint="did you mean Name?", message_contains=("unknown field Nme on Account",)))

r = f"{REC}/Filter_case58.yaml"
case("filter-condition-type-error",
     [AddFile(r, filter_records("""
        Name: Case58 Filter
        Target: Order
        ChildRelation: OrderItems
        UseCase: Generic
        Condition: 'EffectiveDate = ''abc'''
        """))],
     # the single-quoted YAML escapes ('') before the literal must not shift the column
     Expect("E058", r, At("''abc''"), message_contains=("Order.EffectiveDate is a Date field",)))

# Setting records ------------------------------------------------------------------------

r = f"{REC}/Case31_Unknown.yaml"
case("records-of-unknown-setting",
     [AddFile(r, "version: 1\nsetting: Filtr\nrecords:\n  - Name: X\n")],
     Expect("E072", r, At("Filtr"), hint="did you mean Filter?"))

r = f"{REC}/Case31b_DataObject.yaml"
case("records-for-a-data-object",
     [AddFile(r, "version: 1\nsetting: Account\nrecords:\n  - Name: X\n")],
     Expect("E072", r, At("Account"), message_contains=("metabill load",)))

r = f"{REC}/Filter_case32.yaml"
case("unknown-record-field",
     [AddFile(r, filter_records("""
        Name: Case32 Filter
        Targt: Order
        UseCase: Generic
        """))],
     Expect("E041", r, At("Targt"), hint="did you mean Target?"),
     Expect("E073", r, At("Name: Case32"), message_contains=("required field Target",)))

r = f"{REC}/Filter_case33.yaml"
case("picklist-value-not-defined",
     [AddFile(r, filter_records("""
        Name: Case33 Filter
        Target: Order
        ChildRelation: OrderItems
        UseCase: Generics
        """))],
     Expect("E071", r, At("UseCase: Generics", delta=9), hint="did you mean Generic?"))

r = f"{REC}/Filter_case34.yaml"
case("bad-number-in-record",
     [AddFile(r, filter_records("""
        Name: Case34 Filter
        Target: Order
        ChildRelation: OrderItems
        UseCase: Generic
        Sequence: ten
        """))],
     Expect("E070", r, At("ten"), message_contains=("Filter.Sequence", "decimal number")))

r = f"{REC}/Filter_case35.yaml"
case("duplicate-record-name-differing-in-case",
     [AddFile(r, filter_records("""
        Name: order invoice
        Target: Order
        ChildRelation: OrderItems
        UseCase: Generic
        """))],
     Expect("E022", r, At("order invoice"), message_contains=("first at custom_settings/Filter.yaml:",)))

r = f"{REC}/GlobalSettings_case36.yaml"
case("hierarchy-setting-given-records",
     [AddFile(r, "version: 1\nsetting: GlobalSettings\nrecords:\n  - Name: Default\n    AllowOverpayments: true\n")],
     Expect("E013", r, At("records"), message_contains=("hierarchy setting",)))

r = f"{REC}/GlobalSettings_case58.yaml"
case("hierarchy-default-row-twice",
     [AddFile(r, "version: 1\nsetting: GlobalSettings\nvalues:\n  AllowOverpayments: true\n")],
     Expect("E074", r, At("GlobalSettings"), message_contains=("custom_settings/GlobalSettings.yaml",)))

r = f"{REC}/Template_case37.yaml"
case("template-file-missing",
     [AddFile(r, records("Template", """
        Name: Case37 Template
        File: case37_missing.html.j2
        Counter: Default
        """))],
     Expect("E110", r, At("case37_missing.html.j2"), message_contains=("does not exist",)))

r = f"{REC}/Template_case38.yaml"
case("template-path-traversal",
     [AddFile(r, records("Template", """
        Name: Case38 Template
        File: ../../etc/passwd
        Counter: Default
        """))],
     Expect("E110", r, At("../../etc/passwd"), message_contains=("relative path inside templates/",)))

# Invoice documents: validate-config renders every template against its sample invoice (E120-E129)
t, r = "templates/case120.html.j2", f"{REC}/Template_case120.yaml"
case("template-syntax-error",
     [AddFile(t, "<p>{{ invoice.Name }}</p>\n{% for line in invoice.positions %}\n<p>\n"),
      AddFile(r, records("Template", """
        Name: Case120 Template
        File: case120.html.j2
        """))],
     Expect("E120", t, (2, None), message_contains=("template syntax error",)))

t, r = "templates/case121.html.j2", f"{REC}/Template_case121.yaml"
case("template-undefined-field",
     [AddFile(t, "<p>{{ invoice.Name }}</p>\n\n<p>{{ invoice.GrandTotl|money }}</p>\n"),
      AddFile(r, records("Template", """
        Name: Case121 Template
        File: case121.html.j2
        """))],
     Expect("E121", t, (3, None), message_contains=("GrandTotl",)))

t, r = "templates/case122.html.j2", f"{REC}/Template_case122.yaml"
case("template-sandbox-escape",
     [AddFile(t, "<p>\n{{ ''.__class__.__mro__[1].__subclasses__() }}\n</p>\n"),
      AddFile(r, records("Template", """
        Name: Case122 Template
        File: case122.html.j2
        """))],
     Expect("E122", t, (2, None), message_contains=("'__class__' is not allowed",)))

r = f"{REC}/Template_case124.yaml"
case("template-unknown-balance-column",
     [AddFile(r, records("Template", """
        Name: Case124 Template
        File: invoice.html.j2
        BalanceColumns: BalanceTitle;Dat;Amount
        """))],
     Expect("E124", r, At("BalanceTitle;Dat;Amount"), hint="did you mean Date?"))

r = f"{REC}/Template_case125.yaml"
case("template-balance-types-not-json",
     [AddFile(r, records("Template", """
        Name: Case125 Template
        File: invoice.html.j2
        BalanceTypes: '[{"type": "Payment", "title": "Payment"},]'
        """))],
     Expect("E125", r, At("'[{"), message_contains=("BalanceTypes is not valid",)))

r = f"{REC}/Template_case55.yaml"
case("unknown-counter",
     [AddFile(r, records("Template", """
        Name: Case55 Template
        File: invoice.html.j2
        Counter: Defualt
        """))],
     Expect("E075", r, At("Defualt"), hint="did you mean Default?"))

r = f"{REC}/GlAccountRule_case53.yaml"
case("overlapping-gl-rules",
     [AddFile(r, records("GlAccountRule", """
        Name: Case53 Rule A
        TaxCode: XX_53, DE_0
        ProductGroup: Books
        GLAccount: "8530"
        """, """
        Name: Case53 Rule B
        TaxCode: XX_53
        ProductGroup: Books, Music
        GLAccount: "8531"
        """))],
     Expect("W100", r, At("Name: Case53 Rule B"), severity=Severity.WARNING,
            message_contains=("'Case53 Rule A' and 'Case53 Rule B'",)))

r = f"{REC}/CollectiveAccount_case54.yaml"
case("overlapping-collective-accounts",
     [AddFile(r, records("CollectiveAccount", """
        Name: Case54 Dunning A
        Type: Dunning Income
        Account: "2650"
        Region: ZZ
        """, """
        Name: Case54 Dunning B
        Type: Dunning Income
        Account: "2651"
        Region: ZZ
        """))],
     Expect("W101", r, At("Name: Case54 Dunning B"), severity=Severity.WARNING))

f = f"{SET}/GlAccountRule.yaml"
case("custom-criterion-without-context-field",
     [InsertAfter(f, "fields:", "  Segment__c: {type: Text, length: 255, label: Segment}")],
     Expect("E041", f, At("Segment__c"), message_contains=("matches no field of the same name",),
            hint_contains=("InvoiceLineItem",)))

# Semantics over shipped files ------------------------------------------------------------

f = f"{OBJ}/Account.yaml"
case("on-field-copied-to-incompatible-field",
     [InsertAfter(f, "fields:", "  ON_Exported__c: {type: Date, label: Exported on}")],
     Expect("E090", f, At("ON_Exported__c"), message_contains=("Invoice.Exported", "holds date", "checkbox")))

case("on-field-copied-to-engine-maintained-field",
     [InsertAfter(f, "fields:", "  ON_GrandTotal__c: {type: Currency, label: Total (copy)}")],
     Expect("E090", f, At("ON_GrandTotal__c"), message_contains=("Invoice.GrandTotal is maintained by the engine",)))

inv, bd = f"{OBJ}/Invoice.yaml", f"{OBJ}/BookingDetail.yaml"
case("same-name-custom-field-different-types",
     [InsertAfter(inv, "fields:", "  CostCenter__c: {type: Text, length: 20, label: Cost center}"),
      InsertAfter(bd, "fields:", "  CostCenter__c: {type: Number, precision: 10, scale: 0, label: Cost center}")],
     Expect("E091", bd, At("CostCenter__c"), hint="declare both as Text"))

f = f"{OBJ}/Balance.yaml"
case("reserved-write-off-reason-removed",
     [Replace(f, "values: [Missing amount below threshold, Invoice below threshold, ",
              "values: [Missing amount below threshold, ")],
     Expect("E081", f, At("WriteOffReason:"), message_contains=("'Invoice below threshold'",)))

case("product-field-removed",
     [Replace(f, "  Reference: {type: Text, length: 255, label: Reference}\n", "")],
     Expect("E080", f, At("object: Balance", delta=8), message_contains=("Balance.Reference (Text) is missing",)))

f = f"{OBJ}/Invoice.yaml"
case("product-field-retyped",
     [Replace(f, "CancelationReason: {type: Text, length: 255,", "CancelationReason: {type: LongText, length: 255,")],
     Expect("E080", f, At("CancelationReason:"), message_contains=("must be Text, is LongText",)))


# --- running ------------------------------------------------------------------------------


def _position(org: Path, expect: Expect) -> tuple[int | None, int | None]:
    if expect.at is None:
        return None, None
    if isinstance(expect.at, tuple):
        return expect.at
    content = (org / expect.file).read_text(encoding="utf-8")
    line, column = find_position(content, expect.at.needle, expect.at.occurrence)
    return line, column + expect.at.delta


def _show(diagnostics) -> str:
    return "\n".join(
        f"  {d.location.render()}: {d.code} {d.severity.value}: {d.message} [hint: {d.hint}]" for d in diagnostics
    )


def assert_reported(result: LoadResult, org: Path, expect: Expect) -> Diagnostic:
    line, column = _position(org, expect)
    candidates = [d for d in result.diagnostics if d.code == expect.code and d.location.file == expect.file]
    exact = [d for d in candidates if (d.location.line, d.location.column) == (line, column)]
    assert exact, (
        f"expected {expect.code} at {expect.file}:{line}:{column}; "
        f"{expect.code} diagnostics in that file:\n{_show(candidates) or '  (none)'}\nall:\n{_show(result.diagnostics)}"
    )
    found = exact[0]
    if expect.hint is not None:
        assert any(d.hint == expect.hint for d in exact), f"hint {expect.hint!r} not in {[d.hint for d in exact]}"
    for part in expect.hint_contains:
        assert any(part in (d.hint or "") for d in exact), f"{part!r} not in hints {[d.hint for d in exact]}"
    for part in expect.message_contains:
        assert any(part in d.message for d in exact), f"{part!r} not in messages {[d.message for d in exact]}"
    severity = expect.severity or (Severity.WARNING if expect.code.startswith("W") else Severity.ERROR)
    assert found.severity is severity
    return found


def assert_no_cascade(result: LoadResult, allowed: set[str]) -> None:
    stray = [d for d in result.errors if d.location.file not in allowed]
    assert not stray, f"errors outside the touched files {sorted(allowed)}:\n{_show(stray)}"


def _params():
    for c in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=f"bug: {c.bug}")] if c.bug else []
        yield pytest.param(c, id=c.id, marks=marks)


def test_corpus_is_large_and_distinct():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 40
    new_files = [e.path for c in CASES for e in c.edits if isinstance(e, AddFile)]
    assert len(new_files) == len(set(new_files)), "case files must not collide"


@pytest.mark.parametrize("case", list(_params()))
def test_broken_config(case: Case, tmp_path: Path):
    org = copy_org(tmp_path / "org")
    touched = apply_edits(org, case.edits)
    result = load_project(org)
    for expect in case.expects:
        assert_reported(result, org, expect)
    assert_no_cascade(result, touched | set(case.also_in))
    assert not any(d.code == "E099" for d in result.diagnostics), _show(result.diagnostics)
    if case.single_code:
        codes = {e.code for e in case.expects}
        for code in codes:
            assert sum(d.code == code for d in result.diagnostics) == 1, _show(result.diagnostics)
    if case.extra is not None:
        case.extra(result)


def test_all_cases_in_one_org(tmp_path: Path):
    """Every case applied to one copy: a single run reports all of them."""
    org = copy_org(tmp_path / "org")
    touched: set[str] = set()
    for c in CASES:
        touched |= apply_edits(org, c.edits)
    result = load_project(org)
    missing = []
    for c in CASES:
        if c.bug:
            continue  # known engine bugs are asserted (as xfail) by test_broken_config
        for expect in c.expects:
            try:
                assert_reported(result, org, expect)
            except AssertionError as error:
                missing.append(f"{c.id}: {str(error).splitlines()[0]}")
    assert not missing, "\n".join(missing)
    assert_no_cascade(result, touched | {f for c in CASES for f in c.also_in})
    assert not any(d.code == "E099" for d in result.diagnostics)
    # Every diagnostic of the single run belongs to a case: nothing unexpected.
    assert {d.location.file for d in result.diagnostics} <= touched


def test_sample_org_is_clean():
    """The shipped sample org reports nothing at all: no errors, no warnings."""
    from .orgcopy import REPO_ROOT

    result = load_project(REPO_ROOT)
    assert result.diagnostics == (), _show(result.diagnostics)
    assert result.ok
    assert result.files_checked > 40
    assert result.model.object("Invoice") is not None
