"""``metabill einvoice``: e-invoices (XRechnung, ZUGFeRD / Factur-X)."""

from __future__ import annotations

from pathlib import Path

import click

from engine.cli.app import console, group, json_output


@group("einvoice")
def einvoice() -> None:
    """E-invoices: validate XRechnung (CII, UBL) and ZUGFeRD / Factur-X files."""


@einvoice.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
def validate(files: tuple[Path, ...]) -> None:
    """Validate FILES offline: the XSD, the CEN EN 16931 rules and, for files
    that declare XRechnung, the KoSIT XRechnung rules (a ZUGFeRD PDF: its
    embedded XML). Exit 1 when a file has an error."""
    from engine.documents.einvoice.service import validate_files

    report = validate_files(files)
    if json_output():
        import json

        click.echo(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
    else:
        for result in report.results:
            rules = "EN 16931 + XRechnung" if result.xrechnung else "EN 16931"
            status = "PASS" if not result.errors else "FAIL"
            console.print(f"{status} {result.path} ({result.syntax.upper()}, XSD + {rules}): "
                          f"{len(result.errors)} error(s), {len(result.violations) - len(result.errors)} "
                          "warning(s)", markup=False)
            for violation in result.violations:
                terms = f" [{', '.join(violation.terms)}]" if violation.terms else ""
                console.print(f"  {violation.flag} {violation.rule}{terms}: {violation.message}", markup=False)
    failure = report.failure_error()
    if failure is not None:
        raise failure
