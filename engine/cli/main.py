"""The ``metabill`` entry point: the command group with every command.

The group and what commands share live in :mod:`engine.cli.app`; each module
of this package defines a few commands and imports only ``app``. They are
registered here by name and imported when a command is used, so
``metabill --version`` and ``metabill validate-config`` pay only for what
they run. Nothing imports this module but the console script and tests.
"""

from __future__ import annotations

import os
import sys

from engine.cli.app import cli, err_console

#: Every command: its name and where it is defined (imported when used).
COMMANDS = {
    "init": "engine.cli.org:init",
    "validate-config": "engine.cli.org:validate_config",
    "db": "engine.cli.org:db",
    "load": "engine.cli.org:load",
    "export-records": "engine.cli.org:export_records_cmd",
    "invoice-run": "engine.cli.runs:invoice_run",
    "delete-drafts": "engine.cli.runs:delete_drafts_cmd",
    "finalize": "engine.cli.runs:finalize_cmd",
    "cancel": "engine.cli.runs:cancel_cmd",
    "explain": "engine.cli.runs:explain_cmd",
    "runs": "engine.cli.runs:runs_cmd",
    "worker": "engine.cli.runs:worker_cmd",
    "build-subscriptions": "engine.cli.subscriptions:build_subscriptions_cmd",
    "payment": "engine.cli.cash:payment",
    "write-off": "engine.cli.cash:write_off_cmd",
    "collect-balances": "engine.cli.cash:collect_balances_cmd",
    "jobs": "engine.cli.cash:jobs",
    "fix-invoices": "engine.cli.cashmgmt:fix_invoices",
    "payment-plan": "engine.cli.cashmgmt:payment_plan",
    "entries": "engine.cli.cashmgmt:entries",
    "partial-credit": "engine.cli.cashmgmt:partial_credit",
    "bank": "engine.cli.bank:bank",
    "instrument": "engine.cli.bank:instrument",
    "export": "engine.cli.exports:export",
    "render": "engine.cli.render:render",
    "einvoice": "engine.cli.einvoice:einvoice",
    "audit": "engine.cli.audit:audit",
}
cli.lazy.update(COMMANDS)


def main() -> None:
    """Entry point: errors a user can act on were rendered by the group
    (exit 1, or their own code), click's usage errors exit 2; anything
    unexpected is reported as an internal error without a Python traceback
    (set METABILL_DEBUG=1 to see it)."""
    try:
        cli.main(standalone_mode=True)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - last line of defence for users
        if os.environ.get("METABILL_DEBUG"):
            raise
        err_console.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {exc}\n"
            "This is a bug in metabill; set METABILL_DEBUG=1 to see the traceback.",
            markup=True,
        )
        sys.exit(3)


__all__ = ["cli", "main"]


if __name__ == "__main__":
    main()
