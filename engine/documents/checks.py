"""validate-config's checks of invoice documents.

Every Template record names a file inside ``templates/``, parses (balance
columns and types, labels, locale, placeholders), exactly one is the
default, and every template file renders the built-in sample invoices in the
sandbox; template errors point at the template's ``file:line``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from engine.config.checking import Check, CheckContext
from engine.config.diagnostics import Diagnostic, Location, did_you_mean, make

from .einvoice.checks import CHECKS as EINVOICE_CHECKS
from .sample import check_template_record
from .sandbox import template_path_problem
from .template_records import default_template_records


def check_templates(ctx: CheckContext) -> Iterator[Diagnostic]:
    """Every Template record names a file inside templates/ (the path rule of
    :func:`.sandbox.template_path_problem`, which the renderer applies too)."""
    for record in ctx.model.setting_records("Template"):
        name = record.get("File")
        if not name:
            continue
        text = str(name)
        if template_path_problem(text):
            yield make(
                "E110",
                f"template '{record.name}': file name '{text}' must be a relative path inside templates/",
                record.where("File"),
            )
            continue
        found = ctx.model.templates.get(text.lower())
        if found is None:
            yield make(
                "E110",
                f"template '{record.name}': templates/{text} does not exist",
                record.where("File"),
                did_you_mean(text, [t.name for t in ctx.model.templates.values()]),
            )
        elif found.name != text:
            # The renderer opens the file by this name: on a case-sensitive
            # file system it would not be found.
            yield make(
                "E110",
                f"template '{record.name}': templates/{text} does not exist; the file is templates/{found.name} "
                "(file names are case-sensitive)",
                record.where("File"),
                f"write File: {found.name}",
            )


_TEMPLATE_ERROR_CODES = {"syntax": "E120", "undefined": "E121", "runtime": "E121", "refused": "E122", "load": "E123"}
_TEMPLATE_ERROR_TEXT = {
    "syntax": "template syntax error",
    "undefined": "template error on the sample invoice",
    "runtime": "template error on the sample invoice",
    "refused": "template refused by the sandbox",
    "load": "template cannot be loaded",
}


def check_template_documents(ctx: CheckContext) -> Iterator[Diagnostic]:
    """Template records parse (balance columns and types, labels, locale,
    placeholders), exactly one is the default, and every template file renders
    the built-in sample invoices in the sandbox; template errors point at the
    template's file:line (engine/documents/sandbox.py)."""
    records = ctx.model.setting_records("Template")
    defaults = default_template_records(ctx.model)
    if records and len(defaults) != 1:
        where = (defaults[1] if len(defaults) > 1 else records[0])
        yield make(
            "E129",
            "no Template record is marked Default" if not defaults else
            f"{len(defaults)} Template records are marked Default: "
            + ", ".join(f"'{r.name}'" for r in defaults),
            where.where("Default") or where.source or Location("custom_settings"),
            "invoices without a template use the default one: mark exactly one record Default",
        )
    root = Path(ctx.model.root)
    for record in records:
        name = record.get("File")
        found = ctx.model.templates.get(str(name).lower()) if name else None
        if found is None or template_path_problem(str(name)) or found.name != str(name):
            continue  # check_templates reports it (E110)
        settings, errors = check_template_record(root, ctx.model, record)
        for problem in settings.problems:
            yield make(problem.code, problem.message, record.where(problem.field) or Location("custom_settings"),
                       problem.hint)
        for error in errors:
            yield make(
                _TEMPLATE_ERROR_CODES[error.kind],
                f"{_TEMPLATE_ERROR_TEXT[error.kind]}: {error.message}",
                Location(error.file or f"templates/{name}", error.line),
                f"found rendering the sample invoice with Template '{record.name}'",
            )


CHECKS: tuple[Check, ...] = (
    check_templates,
    check_template_documents,
    *EINVOICE_CHECKS,
)
