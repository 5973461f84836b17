"""The ``metabill`` command group and what every command shares.

Commands live in the modules of this package (``org``, ``runs``, ``cash``,
``cashmgmt``, ``exports``, ``render``), each importing only this module;
``main.py`` registers them and is the entry point. A command parses its
arguments, opens the context (:func:`open_context`), calls one service
function of a package and renders what comes back. It holds no SQL and no
business rule.

Errors are rendered in one place, :func:`render_problems`: every
:class:`~engine.domain.errors.EngineError` a command raises reaches its
:class:`MetabillCommand` (commands are declared with :func:`command` and
:func:`group`), which prints its problems (as text, or as JSON with
the global ``--json``) and exits with the error's exit code. Configuration
errors print their diagnostics the way ``validate-config`` does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import click

from engine.config.diagnostics import render_human, to_json_dict
from engine.domain.errors import EngineError, Problem


class _LazyConsole:
    """A rich Console made on first use: importing rich costs more than a
    command like ``--version`` or ``--help`` takes in all."""

    def __init__(self, **options):
        self._options = options
        self._console = None

    @property
    def real(self):
        """The rich Console itself (for rich objects that take a console)."""
        if self._console is None:
            import os
            import sys

            from rich.console import Console

            stream = sys.stderr if self._options.get("stderr") else sys.stdout
            options = dict(self._options)
            if not stream.isatty() and not os.environ.get("COLUMNS"):
                # piped or redirected: never cut an invoice number or a reason
                # to an 80-column guess; tables take the width they need
                options["width"] = 10_000
            self._console = Console(**options)
        return self._console

    def __getattr__(self, name: str):
        return getattr(self.real, name)

    def __enter__(self):
        return self.real.__enter__()

    def __exit__(self, *exc):
        return self.real.__exit__(*exc)


_FOLDING_TABLE = None


def Table(*args, **kwargs):  # noqa: N802 - stands for the rich class
    """A rich Table whose columns fold a long value onto further lines
    instead of cutting it with an ellipsis: an invoice number or a reason is
    never shortened, however narrow the terminal (rich imported on first use)."""
    global _FOLDING_TABLE
    if _FOLDING_TABLE is None:
        from rich.table import Table as RichTable

        class FoldingTable(RichTable):
            def add_column(self, *column_args, **column_kwargs):
                column_kwargs.setdefault("overflow", "fold")
                return super().add_column(*column_args, **column_kwargs)

        _FOLDING_TABLE = FoldingTable
    return _FOLDING_TABLE(*args, **kwargs)


console = _LazyConsole(highlight=False, soft_wrap=True)
err_console = _LazyConsole(stderr=True, highlight=False, soft_wrap=True)

#: Configuration errors shown before a command refuses to run.
SHOWN_DIAGNOSTICS = 20
#: Problems of one error shown as text (JSON shows every one).
SHOWN_PROBLEMS = 50


class UserError(EngineError):
    """The command was given something it cannot work with (an argument that
    names nothing, a combination it cannot honour)."""

    code = "R002"


def json_output() -> bool:
    """Whether the global ``--json`` option is on for this invocation."""
    context = click.get_current_context(silent=True)
    root = context.find_root() if context is not None else None
    return bool(root is not None and (root.obj or {}).get("json"))


def render_problem(problem: Problem) -> str:
    """One problem for people: ``where: message [CODE]`` (``error: ...`` when
    it concerns nothing in particular), then an indented hint."""
    place = problem.where.render()
    text = f"{place}: {problem.message}" if place else f"{problem.severity.value}: {problem.message}"
    text += f" [{problem.code}]"
    if problem.hint:
        text += f"\n    hint: {problem.hint}"
    return text


def render_problems(error: EngineError, as_json: bool | None = None) -> None:
    """Print an error's problems on standard error, as text or JSON (by
    default as the global ``--json`` of the running command says)."""
    from engine.project import ConfigurationInvalid

    diagnostics = error.shown if isinstance(error, ConfigurationInvalid) else ()
    if as_json if as_json is not None else json_output():
        document = {"error": {"code": error.code, "message": error.message},
                    "problems": [p.to_dict() for p in error.problems]}
        if diagnostics:
            document["diagnostics"] = [to_json_dict(d) for d in diagnostics]
        click.echo(json.dumps(document, indent=2, ensure_ascii=False), err=True)
        return
    for diagnostic in diagnostics:
        err_console.print(render_human(diagnostic), markup=False)
    problems = error.problems
    for problem in problems[:SHOWN_PROBLEMS]:
        err_console.print(render_problem(problem), markup=False)
    if len(problems) > SHOWN_PROBLEMS:
        err_console.print(f"... and {len(problems) - SHOWN_PROBLEMS} more (all of them with --json)", markup=False)
    if len(problems) > 1 or (problems and problems[0].message != error.message):
        # an error that lists several problems sums them up
        err_console.print(render_problem(Problem(error.code, error.message.split("\n")[0], hint=error.hint)),
                          markup=False)


class _Rendered(click.ClickException):
    """An EngineError on its way out of click: already rendered by ``show``."""

    def __init__(self, error: EngineError):
        super().__init__(error.message)
        self.error = error
        self.exit_code = error.exit_code
        self.as_json = json_output()  # decided now: click shows the error after the context is gone

    def show(self, file=None) -> None:  # noqa: ARG002 - click's signature
        render_problems(self.error, self.as_json)


def _as_engine_error(error: Exception) -> EngineError | None:
    """The user-facing error ``error`` is, or stands for (a database that is
    locked, unreachable or not migrated); None for anything else (a bug)."""
    if isinstance(error, EngineError):
        return error
    from engine.storage.environment import environment_error

    return environment_error(error)


class MetabillCommand(click.Command):
    """A command whose EngineErrors become their rendering and exit code,
    however it is invoked (the console script, a group, a test's CliRunner)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except Exception as error:  # noqa: BLE001 - only user-facing errors are caught; the rest re-raised
            found = _as_engine_error(error)
            if found is None:
                raise
            raise _Rendered(found) from None


class MetabillGroup(click.Group):
    """A group whose commands and subgroups render their EngineErrors."""

    command_class = MetabillCommand
    group_class = type  # subgroups are MetabillGroups too

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except Exception as error:  # noqa: BLE001 - only user-facing errors are caught; the rest re-raised
            found = _as_engine_error(error)
            if found is None:
                raise
            raise _Rendered(found) from None


def command(name: str | None = None, **attrs):
    """``@click.command`` for metabill commands (errors rendered in one place)."""
    return click.command(name, cls=MetabillCommand, **attrs)


def group(name: str | None = None, **attrs):
    """``@click.group`` for metabill command groups."""
    return click.group(name, cls=MetabillGroup, **attrs)


def org_option(function):
    return click.option(
        "--org",
        "org_dir",
        default=".",
        show_default=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="The org directory (holding metadata/, custom_settings/, templates/).",
    )(function)


def db_option(function):
    return click.option(
        "--db",
        "db_url",
        default=None,
        envvar="METABILL_DB_URL",
        help="Database URL; default sqlite:///metabill.db in the working directory (env METABILL_DB_URL).",
    )(function)


def open_context(org_dir: Path):
    """The runtime context of a valid org; its configuration errors otherwise
    (rendered like validate-config's, first 20)."""
    from engine.project import open_context as open_project_context

    return open_project_context(org_dir)


class BusinessDate(click.DateTime):
    """A date argument (``YYYY-MM-DD``, or other ``formats``) within the
    engine's supported business dates (``engine.config.values.BUSINESS_DATES``):
    9999-12-31 or 0001-01-01 is a usage error naming the option, never a
    booking period for year 1 or an internal error later."""

    def __init__(self, formats=("%Y-%m-%d",)):
        super().__init__(list(formats))

    def convert(self, value, param, ctx):
        from engine.config.values import ValueProblem, check_business_date

        moment = super().convert(value, param, ctx)
        try:
            check_business_date(moment)
        except ValueProblem as problem:
            self.fail(str(problem), param, ctx)
        return moment


#: The date type of every date option of the CLI.
DATE = BusinessDate()


def parse_amount(text: str | None, argument: str = "amount"):
    """A money amount given on the command line, exact (``100.00``, ``-5``);
    None stays None. A text that is no amount is an error naming the argument."""
    from engine.config.values import ValueProblem, parse_decimal
    from engine.domain.errors import Where

    if text is None:
        return None
    try:
        return parse_decimal(text)
    except ValueProblem as problem:
        raise UserError(str(problem), where=Where(argument=argument)) from None


def echo_lines(lines: Iterable[str]) -> None:
    for line in lines:
        click.echo(line)


#: The version of the JSON documents result commands print (docs/cli-json.md).
JSON_VERSION = 1


def jsonable(value):
    """``value`` as JSON data (docs/cli-json.md): amounts as decimal strings
    (exact, never a float), dates and times ISO 8601, a dataclass as an
    object of its public fields, a mapping as an object, any other
    collection as a list, a path or anything else as its text."""
    import dataclasses
    from datetime import date, datetime, time
    from decimal import Decimal
    from enum import Enum

    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):  # never a money value: those are Decimal
        return value
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, Enum):
        return jsonable(value.value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not f.name.startswith("_")}
    if hasattr(value, "_asdict"):  # named tuples, SQLAlchemy rows
        return {str(k): jsonable(v) for k, v in value._asdict().items()}
    if hasattr(value, "items"):
        return {str(k): jsonable(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [jsonable(v) for v in items]
    return str(value)


def emit(command_name: str, result) -> bool:
    """With the global ``--json``, print the result document of a command
    (``{"metabill": 1, "command": ..., "result": ...}``, see
    docs/cli-json.md) on standard output and return True: the caller then
    prints nothing else. Without it return False (the caller prints its
    table or lines)."""
    if not json_output():
        return False
    document = {"metabill": JSON_VERSION, "command": command_name, "result": jsonable(result)}
    click.echo(json.dumps(document, indent=2, ensure_ascii=False))
    return True


class LazyGroup(MetabillGroup):
    """The root group: commands are named here with the module that defines
    them and imported only when used (or listed by ``--help``), so a command
    pays for its own imports only."""

    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, name: str):
        if name in self.lazy and name not in self.commands:
            import importlib

            module_name, attribute = self.lazy[name].split(":")
            self.add_command(getattr(importlib.import_module(module_name), attribute), name)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="metabill")
@click.option("--json", "as_json", is_flag=True,
              help="Print results as JSON on standard output and errors as JSON on standard error.")
@click.pass_context
def cli(context: click.Context, as_json: bool) -> None:
    """metabill: a declarative, metadata-driven billing engine."""
    context.obj = {"json": as_json}
