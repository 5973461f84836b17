"""``metabill audit``: one function that reconciles everything the engine wrote.

:func:`audit` runs every check of :data:`engine.audit.checks.CHECKS` in one
read-only transaction (a consistent snapshot; nothing is written, on
PostgreSQL the transaction is READ ONLY) and returns the
:class:`~engine.audit.findings.AuditReport`. The command exits non-zero
when ``report.ok`` is false (``report.failure_error()``); the state machine
of the reliability tests calls the same function after every step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import sqlalchemy as sa

from engine.domain.errors import Where
from engine.storage.context import Context
from engine.storage.db import transaction

from .base import AuditRun
from .checks import CHECKS, check_name
from .errors import AuditFileUnreadable
from .findings import AuditReport, extend


def readable(paths: Iterable[Path | str], option: str) -> tuple[Path, ...]:
    """The files given with ``option``, each a readable regular file
    (:class:`AuditFileUnreadable` otherwise, before anything is read)."""
    found = []
    for given in paths:
        path = Path(given)
        if not path.is_file():
            raise AuditFileUnreadable(f"{path}: no such file", where=Where(argument=option, file=str(path)),
                                      hint="give the files an export wrote")
        try:
            with path.open("rb"):
                pass
        except OSError as error:
            raise AuditFileUnreadable(f"{path}: {error.strerror or error}",
                                      where=Where(argument=option, file=str(path))) from None
        found.append(path)
    return tuple(found)


def audit(engine: sa.Engine, ctx: Context, *, datev_files: Iterable[Path | str] = (),
          sepa_files: Iterable[Path | str] = ()) -> AuditReport:
    """Reconcile the database (and the given DATEV and SEPA files) and return
    every difference as a finding. Read-only; the same database gives the same
    report (findings sorted, no clock involved)."""
    run_files = readable(datev_files, "--datev"), readable(sepa_files, "--sepa")
    report = AuditReport()
    with transaction(engine, readonly=True) as conn:
        run = AuditRun(conn, ctx, report, datev_files=run_files[0], sepa_files=run_files[1])
        for check in CHECKS:
            name = check_name(check)
            report.checks.append(name)
            extend(report, name, check(run))
    report.sort()
    return report
