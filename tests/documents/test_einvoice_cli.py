"""``metabill einvoice validate FILE...``: the same validator as at
finalization, on any file; exit 0 when every file passes, 1 otherwise, with
the rule id and business terms of each violation; ``--json`` for machines."""

from __future__ import annotations

import json

from click.testing import CliRunner

from engine.cli.main import cli
from engine.documents.einvoice.build import build_einvoice
from engine.documents.einvoice.cii import cii_xml
from engine.documents.einvoice.mapping import load_mapping
from engine.documents.einvoice.ubl import ubl_xml

from config.orgcopy import REPO_ROOT
from databases import load_model
from documents.einvoice_samples import ENTITY, cases


def invoke(*args: str):
    return CliRunner(env={"METABILL_DB_URL": None, "COLUMNS": "200"}).invoke(cli, [*args], catch_exceptions=False)


def _files(tmp_path):
    record, lines, account, _ = cases()["mixed-19-7"]
    doc = build_einvoice(record, lines, account, ENTITY, load_mapping(load_model(REPO_ROOT)))
    good_cii, good_ubl = tmp_path / "good-cii.xml", tmp_path / "good-ubl.xml"
    good_cii.write_bytes(cii_xml(doc))
    good_ubl.write_bytes(ubl_xml(doc))
    bad = tmp_path / "bad.xml"
    payable = f"<ram:DuePayableAmount>{doc.payable}</ram:DuePayableAmount>".encode()
    assert payable in cii_xml(doc)
    bad.write_bytes(cii_xml(doc).replace(payable, f"<ram:DuePayableAmount>{doc.payable + 1}"
                                                  "</ram:DuePayableAmount>".encode()))
    return good_cii, good_ubl, bad


def test_valid_files_pass(tmp_path):
    good_cii, good_ubl, _ = _files(tmp_path)
    result = invoke("einvoice", "validate", str(good_cii), str(good_ubl))
    assert result.exit_code == 0, result.output
    assert result.output.count("PASS") == 2 and "EN 16931 + XRechnung" in result.output


def test_a_violation_names_the_rule_and_fails(tmp_path):
    good_cii, _, bad = _files(tmp_path)
    result = invoke("einvoice", "validate", str(good_cii), str(bad))
    assert result.exit_code == 1
    assert f"FAIL {bad}" in result.output and "BR-CO-16" in result.output and "[R622]" in result.output


def test_not_an_einvoice_is_named(tmp_path):
    other = tmp_path / "other.xml"
    other.write_text("<order/>", encoding="utf-8")
    broken = tmp_path / "broken.xml"
    broken.write_text("<Invoice", encoding="utf-8")
    result = invoke("einvoice", "validate", str(other), str(broken))
    assert result.exit_code == 1
    assert "the root element is <order>" in result.output and "not well-formed XML" in result.output
    assert "R624" in result.output and "Traceback" not in result.output


def test_a_doctype_is_refused_before_any_rule_runs(tmp_path):
    """XXE: the Schematron runs in Saxon on the file's bytes, so a DTD that
    could name an external entity is refused before anything parses it."""
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET", encoding="utf-8")
    good_cii, _, _ = _files(tmp_path)
    text = good_cii.read_text(encoding="utf-8")
    body = text.split("?>", 1)[1] if text.startswith("<?xml") else text
    root = body.lstrip().split()[0].lstrip("<")
    hostile = tmp_path / "hostile.xml"
    hostile.write_text(f'<?xml version="1.0"?>\n<!DOCTYPE {root} [<!ENTITY xxe SYSTEM "file://{secret}">]>\n'
                       + body.lstrip().replace("</ram:Name>", "&xxe;</ram:Name>", 1), encoding="utf-8")
    result = invoke("einvoice", "validate", str(hostile))
    assert result.exit_code == 1
    assert "DOCTYPE is not allowed" in result.output and "TOP-SECRET" not in result.output


def test_json_output(tmp_path):
    good_cii, _, bad = _files(tmp_path)
    result = invoke("--json", "einvoice", "validate", str(good_cii), str(bad))
    assert result.exit_code == 1
    document = json.loads(result.stdout)  # the report; the error goes to standard error
    files = {f["path"]: f for f in document["files"]}
    assert files[str(good_cii)]["valid"] is True
    assert [v["rule"] for v in files[str(bad)]["violations"] if v["flag"] == "fatal"][:1] == ["BR-CO-16"]
