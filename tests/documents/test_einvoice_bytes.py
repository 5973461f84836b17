"""The e-invoice writers resolve each prefixed tag once
(:func:`engine.documents.einvoice.xmltree.bound`, issue 19): the bytes are
those of the writer that resolved the tag on every element, for every
document type and VAT category of the samples, in both syntaxes. Pure."""

from __future__ import annotations

import pytest
from lxml import etree

from engine.documents.einvoice import cii, ubl
from engine.documents.einvoice.build import build_einvoice
from engine.documents.einvoice.mapping import load_mapping

from config.orgcopy import REPO_ROOT
from databases import load_model

from .einvoice_samples import ENTITY, cases

CASES = cases()


def _per_element(namespaces):
    """The writer's element functions as they were: tag resolved per call,
    attributes always passed."""
    def child(parent, tag, text=None, **attrs):
        prefix, _, local = tag.partition(":")
        element = etree.SubElement(parent, f"{{{namespaces[prefix]}}}{local}", attrs)
        if text is not None:
            element.text = text
        return element

    def optional_child(parent, tag, text, **attrs):
        if text:
            child(parent, tag, text, **attrs)

    return child, optional_child


@pytest.fixture(scope="module")
def docs():
    mapping = load_mapping(load_model(REPO_ROOT))
    return {name: build_einvoice(record, lines, account, ENTITY, mapping, preceding=preceding)
            for name, (record, lines, account, preceding) in CASES.items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_bytes_are_those_of_the_per_element_writer(docs, name, monkeypatch):
    doc = docs[name]
    now = cii.cii_xml(doc), ubl.ubl_xml(doc)
    monkeypatch.setattr(cii, "_el", _per_element(cii.NSMAP)[0])
    monkeypatch.setattr(cii, "_opt", _per_element(cii.NSMAP)[1])
    monkeypatch.setattr(ubl, "_el", _per_element(ubl._NS)[0])
    monkeypatch.setattr(ubl, "_opt", _per_element(ubl._NS)[1])
    before = cii.cii_xml(doc), ubl.ubl_xml(doc)
    assert b"schemeID=" in before[0] + before[1] and b"<ram:LineTotalAmount>" in before[0]  # attributes and lines
    assert now == before
