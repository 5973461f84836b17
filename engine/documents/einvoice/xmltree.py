"""Building an XML tree from prefixed tag names, shared by the CII and UBL
writers (each binds its own namespace map with :func:`functools.partial`)."""

from __future__ import annotations

from typing import Mapping

from lxml import etree


def child(namespaces: Mapping[str, str], parent: etree._Element, tag: str, text: str | None = None,
          **attrs: str) -> etree._Element:
    """A new element ``prefix:local`` under ``parent``, with its text and attributes."""
    prefix, _, local = tag.partition(":")
    element = etree.SubElement(parent, f"{{{namespaces[prefix]}}}{local}", attrs)
    if text is not None:
        element.text = text
    return element


def optional_child(namespaces: Mapping[str, str], parent: etree._Element, tag: str, text: str | None,
                   **attrs: str) -> None:
    """:func:`child`, only when there is a text: optional business terms stay out when empty."""
    if text:
        child(namespaces, parent, tag, text, **attrs)
