"""The ``metabill`` entry point: the command group with every command.

The group and what commands share live in :mod:`engine.cli.app`; each module
of this package defines a few commands (``COMMANDS``) and imports only
``app``. Nothing imports this module but the console script and tests.
"""

from __future__ import annotations

import os
import sys

from engine.cli import cash, cashmgmt, exports, org, render, runs
from engine.cli.app import cli, err_console

for _module in (org, runs, cash, cashmgmt, exports, render):
    for _command in _module.COMMANDS:
        cli.add_command(_command)


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
