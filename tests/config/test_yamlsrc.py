"""Unit tests of the safe YAML reader (engine.config.yamlsrc)."""

from __future__ import annotations

import pytest
import yaml

from engine.config import yamlsrc
from engine.config.yamlsrc import DEFAULT_LIMITS, Limits, parse_yaml_bytes, read_yaml


def parse(source: str | bytes, limits: Limits = DEFAULT_LIMITS):
    raw = source.encode("utf-8") if isinstance(source, str) else source
    return parse_yaml_bytes(raw, "f.yaml", limits)


def value_of(scalar: str):
    doc, diagnostics = parse(f"v: {scalar}\n")
    assert diagnostics == []
    return doc.data["v"]


def codes(diagnostics) -> list[tuple[str, int | None, int | None]]:
    return [(d.code, d.location.line, d.location.column) for d in diagnostics]


# --- values as written ------------------------------------------------------------------


@pytest.mark.parametrize(
    "scalar",
    ["NO", "no", "yes", "Yes", "on", "off", "12.30", "0755", "007", "2024-01-31", "2024-01-31T10:00:00Z",
     "1_000", ".5", "1e3", "0x1F", "0o17", "12:30", ".inf", "-.inf", ".nan", "1.0", "00", "EUR"],
)
def test_implicit_yaml11_typing_is_not_applied(scalar):
    value = value_of(scalar)
    assert value == scalar and type(value) is str


@pytest.mark.parametrize(
    ("scalar", "expected"),
    [
        ("true", True), ("True", True), ("TRUE", True),
        ("false", False), ("False", False), ("FALSE", False),
        ("null", None), ("Null", None), ("NULL", None), ("~", None), ("", None),
        ("80", 80), ("-3", -3), ("0", 0), ("1234567890123456789", 1234567890123456789),
    ],
)
def test_narrow_typing_of_plain_scalars(scalar, expected):
    value = value_of(scalar)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    ("scalar", "expected"),
    [('"80"', "80"), ("'true'", "true"), ('""', ""), ("'null'", "null"), ('"12.30"', "12.30"), ("!!str 12", "12")],
)
def test_quoted_and_str_tagged_scalars_stay_text(scalar, expected):
    value = value_of(scalar)
    assert value == expected and type(value) is str


def test_block_scalars_keep_their_text():
    doc, diagnostics = parse("literal: |\n  a\n  b\nfolded: >-\n  a\n  b\n")
    assert diagnostics == []
    assert doc.data == {"literal": "a\nb\n", "folded": "a b"}


def test_nested_structures_and_text_are_kept():
    source = "a:\n  b: [1, x, 2.50]\n  c: {d: NO}\n"
    doc, diagnostics = parse(source)
    assert diagnostics == []
    assert doc.data == {"a": {"b": [1, "x", "2.50"], "c": {"d": "NO"}}}
    assert doc.text == source
    assert doc.file == "f.yaml"


def test_non_string_keys_become_text():
    doc, _ = parse("1: one\ntrue: yes\n~: nothing\n")
    assert doc.data == {"1": "one", "true": "yes", "": "nothing"}


# --- marks ------------------------------------------------------------------------------


def test_marks_for_keys_and_values():
    doc, _ = parse("version: 1\nfields:\n  Amount__c: {type: Number, scale: 2}\n  Tags: [a, b]\n")
    assert doc.value_marks[()] == (1, 1)
    assert doc.key_marks[("version",)] == (1, 1)
    assert doc.value_marks[("version",)] == (1, 10)
    assert doc.key_marks[("fields",)] == (2, 1)
    assert doc.value_marks[("fields",)] == (3, 3)  # a block mapping starts at its first key
    assert doc.key_marks[("fields", "Amount__c")] == (3, 3)
    assert doc.value_marks[("fields", "Amount__c")] == (3, 14)
    assert doc.key_marks[("fields", "Amount__c", "scale")] == (3, 29)
    assert doc.value_marks[("fields", "Amount__c", "scale")] == (3, 36)
    assert doc.value_marks[("fields", "Tags", 1)] == (4, 13)


def test_location_of_values_keys_and_fallback():
    doc, _ = parse("a:\n  b: 1\n")
    loc = doc.location(("a", "b"))
    assert (loc.file, loc.line, loc.column, loc.yaml_path) == ("f.yaml", 2, 6, ("a", "b"))
    key = doc.location(("a", "b"), key=True)
    assert (key.line, key.column) == (2, 3)
    # An unknown path falls back to the nearest enclosing node but keeps the path asked for.
    missing = doc.location(("a", "zz", 3))
    assert (missing.line, missing.column, missing.yaml_path) == (2, 3, ("a", "zz", 3))
    # key=True without a key mark falls back to the value.
    assert (doc.location(("a",), key=True).line, doc.location(("a",), key=True).column) == (1, 1)


def test_bom_is_dropped_and_marks_are_not_shifted():
    doc, diagnostics = parse(b"\xef\xbb\xbfname: x\nother: y\n")
    assert diagnostics == []
    assert doc.data == {"name": "x", "other": "y"}
    assert doc.key_marks[("name",)] == (1, 1)
    assert doc.value_marks[("other",)] == (2, 8)


def test_columns_count_characters_not_bytes():
    doc, _ = parse("k: Ünïcödé\nz: 1\nw: [Ä, Ö]\n")
    assert doc.value_marks[("w", 1)] == (3, 8)  # Ä takes two bytes but one column


# --- duplicates -------------------------------------------------------------------------


def test_duplicate_keys_keep_first_value_and_report_all():
    doc, diagnostics = parse("a: 1\nb:\n  c: first\n  c: second\n  c: third\n  d: 4\na: 5\ne: 6\n")
    assert doc is not None
    assert doc.data == {"a": 1, "b": {"c": "first", "d": 4}, "e": 6}
    assert codes(diagnostics) == [("E003", 4, 3), ("E003", 5, 3), ("E003", 7, 1)]
    assert diagnostics[0].message == "duplicate key 'c' (first defined at line 3)"
    assert diagnostics[2].message == "duplicate key 'a' (first defined at line 1)"
    assert all(d.hint == "remove or rename one of the two entries" for d in diagnostics)
    assert diagnostics[0].location.yaml_path == ("b", "c")
    # The first value keeps its marks.
    assert doc.value_marks[("b", "c")] == (3, 6)


def test_duplicate_key_with_a_nested_value_keeps_reading():
    doc, diagnostics = parse("a: {x: 1}\na:\n  y: &anchor 2\nb: 3\n")
    # The discarded value is still read: problems inside it are found.
    assert codes(diagnostics) == [("E005", 3, 6)]
    assert doc is None


def test_duplicate_keys_differing_in_case_are_distinct_in_yaml():
    doc, diagnostics = parse("Name: a\nname: b\n")
    assert diagnostics == []
    assert doc.data == {"Name": "a", "name": "b"}


def test_duplicates_of_differently_typed_equal_keys():
    _, diagnostics = parse('1: a\n"1": b\n')
    assert codes(diagnostics) == [("E003", 2, 1)]


# --- refused input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "code", "line", "column"),
    [
        ("a: &x [1]\n", "E005", 1, 4),
        ("a: [1]\nb: *x\n", "E005", 2, 4),
        ("a: !!python/object:os.system x\n", "E005", 1, 4),
        ("a: !!int 12\n", "E005", 1, 4),
        ("a: !!map {b: 1}\nc: 2\n", None, None, None),
        ("a: !custom x\n", "E005", 1, 4),
        ("? [a, b]\n: 1\n", "E005", 1, 3),
        ("a: 1\n---\nb: 2\n", "E007", 2, 1),
        ("a: [1, 2\n", "E002", 2, 1),
        ("a: b: c\n", "E002", 1, 5),
        ('a: "x\x07"\n', "E002", 1, 6),
        ("- a\n- b\n", "E006", 1, 1),
        ("just text\n", "E006", 1, 1),
        ("", "E006", 1, 1),
        ("   \n\n", "E006", 1, 1),
        ("# only a comment\n", "E006", 1, 1),
        ("---\n...\n", "E006", 2, 1),
    ],
)
def test_refused_documents(source, code, line, column):
    doc, diagnostics = parse(source)
    if code is None:
        assert diagnostics == [] and doc.data == {"a": {"b": 1}, "c": 2}
        return
    assert codes(diagnostics) == [(code, line, column)]
    assert doc is None


def test_anchor_message_and_hint():
    _, [diagnostic] = parse("a: &x [1]\n")
    assert diagnostic.message == "anchors (&x) are not supported"
    assert "anchors and aliases are refused" in diagnostic.hint


def test_billion_laughs_is_refused_quickly():
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        prev, name = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    _, diagnostics = parse("\n".join(lines) + "\n")
    assert codes(diagnostics) == [("E005", 1, 4)]


def test_binary_file():
    doc, [diagnostic] = parse(b"a: 1\n\x00\x01\x02")
    assert doc is None
    assert (diagnostic.code, diagnostic.location.line) == ("E001", None)
    assert "NUL" in diagnostic.message


def test_not_utf8_points_at_the_bad_byte():
    doc, [diagnostic] = parse(b"a: 1\nbb: ok\nlabel: Caf\xe9\n")
    assert doc is None
    assert codes([diagnostic]) == [("E001", 3, 11)]
    assert diagnostic.message == "file is not valid UTF-8 (byte 0xe9)"
    assert diagnostic.hint == "save the file as UTF-8"


def test_not_utf8_column_counts_characters_like_every_other_column():
    _, [diagnostic] = parse("label: Übergröße".encode("utf-8") + b"\xe9\n")
    assert codes([diagnostic]) == [("E001", 1, 17)]


# --- limits -----------------------------------------------------------------------------


def test_default_limits():
    assert DEFAULT_LIMITS == Limits(max_file_bytes=1024 * 1024, max_depth=40, max_nodes=200_000, max_scalar_chars=100_000)


def test_file_size_limit():
    limits = Limits(max_file_bytes=20)
    doc, [diagnostic] = parse("a: 123456789012345678\n", limits)
    assert doc is None
    assert diagnostic.code == "E004"
    assert diagnostic.message == "file is 22 bytes; the limit is 20 bytes"
    assert parse("a: 1234567890123456\n", limits)[1] == []  # exactly 20 bytes is fine


def test_depth_limit():
    limits = Limits(max_depth=3)
    assert parse("a: [[1]]\n", limits)[1] == []  # three levels: the mapping and two lists
    doc, diagnostics = parse("a: [[[1]]]\n", limits)
    assert doc is None
    assert codes(diagnostics) == [("E005", 1, 6)]
    assert diagnostics[0].message == "nesting deeper than 3 levels"


def test_node_limit():
    limits = Limits(max_nodes=7)
    assert parse("a: [1, 2, 3]\n", limits)[1] == []  # root, key, list and three items: 6 nodes
    _, diagnostics = parse("a: [1, 2, 3, 4, 5]\n", limits)
    assert codes(diagnostics) == [("E004", 1, 17)]
    assert diagnostics[0].message == "more than 7 YAML nodes in one file"


def test_scalar_limit():
    limits = Limits(max_scalar_chars=5)
    assert parse("a: abcde\n", limits)[1] == []
    _, diagnostics = parse("a: x\nb: abcdef\n", limits)
    assert codes(diagnostics) == [("E004", 2, 4)]
    assert "6 characters" in diagnostics[0].message


def test_read_yaml_checks_size_before_reading(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("".join(f"k{i}: 1\n" for i in range(10)), encoding="utf-8")  # 60 bytes
    doc, [diagnostic] = read_yaml(path, "metadata/objects/big.yaml", Limits(max_file_bytes=59))
    assert doc is None
    assert diagnostic.code == "E004"
    assert diagnostic.location.file == "metadata/objects/big.yaml"
    assert diagnostic.message == "file is 60 bytes; the limit is 59 bytes"
    doc, diagnostics = read_yaml(path, "metadata/objects/big.yaml")
    assert diagnostics == []
    assert len(doc.data) == 10


def test_read_yaml_of_an_unreadable_path(tmp_path):
    directory = tmp_path / "x.yaml"
    directory.mkdir()
    doc, [diagnostic] = read_yaml(directory, "x.yaml")
    assert doc is None
    assert diagnostic.code == "E001"
    assert diagnostic.message.startswith("cannot read file")


def test_read_yaml_reads_a_file(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("version: 1\nobject: Thing__c\n", encoding="utf-8")
    doc, diagnostics = read_yaml(path, "metadata/objects/ok.yaml")
    assert diagnostics == []
    assert doc.data == {"version": 1, "object": "Thing__c"}
    assert doc.location(("object",)).render() == "metadata/objects/ok.yaml:2:9"


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML without libyaml")
def test_libyaml_is_used_when_available():
    assert issubclass(yamlsrc._Parser, yaml.cyaml.CParser)
