"""Reading a field's value from a plain record, formulas included.

Every layer reads source records, invoices, balances and accounts as dicts
keyed by lower-case field name; a formula field is evaluated on the record
(its compiled closure comes from the loader). One definition, so the run,
finalization, balances and assignment read values alike.
"""

from __future__ import annotations

from datetime import date
from typing import Mapping

from engine.config.model import FieldDef

from .errors import EngineError


class UncompiledFormula(EngineError, ValueError):
    """A formula field was read whose formula did not compile (validate-config
    reports the formula itself)."""

    code = "R101"


def field_paths(fdef: FieldDef) -> set[tuple[str, ...]]:
    """The record paths reading ``fdef`` needs: its own column, or every path
    its formula references."""
    if fdef.formula is not None:
        compiled = fdef.formula.compiled
        return set(compiled.references) if compiled is not None else set()
    return {(fdef.key,)}


def read_value(fdef: FieldDef | None, record: Mapping[str, object], today: date) -> object:
    """A field's value from a plain record, evaluating formulas."""
    if fdef is None:
        return None
    if fdef.formula is not None:
        compiled = fdef.formula.compiled
        if compiled is None:
            raise UncompiledFormula(f"formula {fdef.object_name}.{fdef.name} did not compile")
        return compiled.evaluate(record, today=today)
    value = record.get(fdef.key)
    if isinstance(value, dict):  # a lookup named like its relationship
        return value.get("id")
    return value
