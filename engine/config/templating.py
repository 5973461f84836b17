"""The template contract: a sandboxed Jinja2 environment for invoice documents,
the template settings it reads, and the data shape templates see.

Templates are treated as hostile user code. They come from the org directory
(``templates/``), are written by whoever configures the org, and run inside
the engine, so this module is the one place that decides what a template may
do. It lives in ``config`` (not ``documents``) because ``validate-config``
renders every template against a built-in sample invoice, and ``config`` must
not import the packages below it; ``engine/documents`` reads the real invoice
data and calls the same functions.

What the sandbox (:class:`InvoiceSandbox`) allows and refuses:

* **data access**: ``x.y`` and ``x['y']`` read keys of mappings and indexes
  of sequences, a few attributes of dates and of the loop variable, nothing
  else. Names starting with ``_`` and ``mro`` are refused outright
  (``__class__``, ``__globals__``, ``_TemplateReference__context`` ...).
* **calls**: only macros, ``caller()``, ``loop.cycle``/``loop.changed``, the
  ``range`` and ``namespace`` globals. Methods of data (``'x'.format()``,
  ``dict.items()``) are refused; filters do that work instead.
* **globals**: ``range`` (at most :data:`MAX_RANGE` numbers) and
  ``namespace``; Jinja's ``lipsum``, ``cycler``, ``joiner``, ``dict`` are gone,
  and there is no ``config``, ``request`` or ``self`` beyond Jinja's own.
* **filters**: an allowlist (no ``format``, ``random``, ``attr`` tricks,
  ``indent``/``center`` with huge widths ...), plus ours: ``money``,
  ``currency``, ``date``, ``percent``, ``number``, ``css``.
* **operators**: ``*``, ``+``, ``**`` and ``%`` are checked (string
  repetition and huge powers are capped, ``%`` formatting of strings refused).
* **limits**: every loop counts against an iteration budget, calls against a
  call budget, a render has a wall-clock deadline and a maximum output size.
* **files**: the loader reads only files inside ``templates/`` (no ``..``, no
  absolute paths, no symbolic links, bounded size); ``include``/``import``
  of anything else fails.
* **undefined names fail** (:class:`jinja2.StrictUndefined`), and output is
  HTML-escaped (autoescape on).

Errors carry the template's ``file:line`` (:func:`describe_error`).
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import re
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterable, Iterator, Mapping, Sized

import jinja2
from jinja2 import nodes
from jinja2.visitor import NodeTransformer
from jinja2.bccache import Bucket, BytecodeCache
from jinja2.exceptions import SecurityError, TemplateNotFound, TemplateSyntaxError, UndefinedError
from jinja2.runtime import LoopContext, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace
from markupsafe import Markup

from .diagnostics import did_you_mean
from .model import FieldDef, FieldType, OrgModel, SettingRecord

TEMPLATE_FOLDER = "templates"

#: Limits of one render. Generous for real invoices, small for attacks.
MAX_TEMPLATE_BYTES = 256 * 1024
MAX_OUTPUT_CHARS = 8_000_000
MAX_STRING_CHARS = 1_000_000
MAX_RANGE = 10_000
MAX_ITERATIONS = 1_000_000
MAX_CALLS = 200_000
MAX_SECONDS = 20.0
MAX_POWER_EXPONENT = 64


class TemplateRefused(SecurityError):
    """The sandbox refused what a template tried (an unsafe attribute, a
    method call, a path outside templates/, a limit)."""


# --- paths ----------------------------------------------------------------------


def template_path_problem(name: object) -> str | None:
    """Why ``name`` cannot be a template path inside templates/, or None.

    The same rule serves validate-config (E110), the loader of the sandbox
    (``include``/``import``) and the renderer."""
    if not isinstance(name, str) or not name.strip():
        return "the template file name is empty"
    if "\x00" in name or "\\" in name or ":" in name:
        return f"'{name}' must be a relative path inside templates/ (no backslashes, drive letters or URLs)"
    if name.startswith("/"):
        return f"'{name}' must be a relative path inside templates/"
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return f"'{name}' must be a relative path inside templates/ (no '..', '.' or empty segments)"
    return None


def confined_path(root: Path, name: str) -> Path:
    """The file ``templates/<name>`` under ``root`` (the templates folder),
    refusing names that leave it, symbolic links on the way and files that
    resolve outside it."""
    problem = template_path_problem(name)
    if problem:
        raise TemplateRefused(problem)
    base = root.resolve()
    candidate = root
    for part in name.split("/"):
        candidate = candidate / part
        if candidate.is_symlink():
            raise TemplateRefused(f"'{name}' goes through a symbolic link; templates must be plain files")
    resolved = candidate.resolve()
    if not resolved.is_relative_to(base):
        raise TemplateRefused(f"'{name}' leaves templates/")
    return resolved


class ConfinedLoader(jinja2.BaseLoader):
    """Loads templates from one folder only (see :func:`confined_path`),
    UTF-8 text of at most :data:`MAX_TEMPLATE_BYTES`."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, Callable[[], bool]]:
        path = confined_path(self.root, template)
        if not path.is_file():
            raise TemplateNotFound(template)
        data = path.read_bytes()
        if len(data) > MAX_TEMPLATE_BYTES:
            raise TemplateRefused(f"'{template}' is larger than {MAX_TEMPLATE_BYTES // 1024} KiB")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise TemplateRefused(f"'{template}' is not UTF-8 text (byte {error.start})") from None
        return text, str(path), lambda: False

    def list_templates(self) -> list[str]:
        return sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())


# --- the sandbox ------------------------------------------------------------------


@dataclass
class _Budget:
    deadline: float
    iterations: int = 0
    calls: int = 0
    max_iterations: int = MAX_ITERATIONS
    max_calls: int = MAX_CALLS

    def tick_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateRefused("the template ran longer than the time limit")


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("metabill_template_budget", default=None)


def _budget() -> _Budget:
    found = _BUDGET.get()
    if found is None:  # a render outside render_template: a private budget
        found = _Budget(time.monotonic() + MAX_SECONDS)
        _BUDGET.set(found)
    return found


class _GuardLoops(NodeTransformer):
    """Wraps the iterable of every ``{% for %}`` in ``environment.mb_guard_iter``
    and every ``~`` concatenation in ``environment.mb_guard_concat``, so loops
    count against the budget and strings stay bounded."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        if node.recursive:
            raise TemplateSyntaxError("recursive loops are not allowed in invoice templates", node.lineno)
        node.iter = nodes.Call(nodes.EnvironmentAttribute("mb_guard_iter"), [node.iter], [], None, None,
                               lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Call(nodes.EnvironmentAttribute("mb_guard_concat"), [nodes.List(node.nodes, lineno=node.lineno)],
                          [], None, None, lineno=node.lineno)


class _MemoryBytecodeCache(BytecodeCache):
    """Compiled templates shared between environments in this process, keyed
    by file name and source checksum: every load_org renders the templates,
    and compiling is the slow part."""

    _store: dict[str, bytes] = {}
    _SALT = "metabill-sandbox-1"

    def get_cache_key(self, name: str, filename: str | None = None) -> str:
        return hashlib.sha1(f"{self._SALT}|{name}|{filename}".encode()).hexdigest()

    def load_bytecode(self, bucket: Bucket) -> None:
        code = self._store.get(bucket.key)
        if code is not None:
            bucket.bytecode_from_string(code)

    def dump_bytecode(self, bucket: Bucket) -> None:
        if len(self._store) > 256:
            self._store.clear()
        self._store[bucket.key] = bucket.bytecode_to_string()


_ALLOWED_FILTERS = frozenset({
    "abs", "capitalize", "count", "d", "default", "dictsort", "e", "escape", "first", "forceescape", "groupby",
    "int", "items", "join", "last", "length", "list", "lower", "map", "max", "min", "reject", "rejectattr",
    "reverse", "select", "selectattr", "sort", "string", "striptags", "sum", "title", "tojson", "trim", "truncate",
    "unique", "upper", "urlencode", "wordcount",
})

_DATE_ATTRIBUTES = frozenset({"year", "month", "day"})
_LOOP_ATTRIBUTES = frozenset({"index", "index0", "revindex", "revindex0", "first", "last", "length", "depth",
                              "depth0", "previtem", "nextitem", "cycle", "changed"})


def _refuse_name(name: object) -> bool:
    text = str(name)
    return text.startswith("_") or text in ("mro", "func_globals", "gi_frame", "gi_code", "cr_frame", "f_globals")


class InvoiceSandbox(ImmutableSandboxedEnvironment):
    """The Jinja2 environment every invoice template runs in (see the module
    docstring for what it refuses). Build one with :func:`make_environment`."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, root: Path, *, max_output: int = MAX_OUTPUT_CHARS, formatter: "Formatter | None" = None):
        super().__init__(
            loader=ConfinedLoader(root),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            auto_reload=False,
            cache_size=64,
            bytecode_cache=_MemoryBytecodeCache(),
            extensions=["jinja2.ext.loopcontrols"],
        )
        self.root = Path(root)
        self.max_output = max_output
        self.filters = {name: f for name, f in self.filters.items() if name in _ALLOWED_FILTERS}
        self.filters["replace"] = _safe_replace
        fmt = formatter or Formatter("en_US")
        self.filters.update(fmt.filters())
        self.filters["css"] = css_text
        self.globals = {"range": _safe_range, "namespace": Namespace}

    # parsing: guard loops and concatenations
    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        return _GuardLoops().visit(tree)

    def mb_guard_iter(self, iterable: Any) -> Iterator[Any]:
        budget = _budget()
        if isinstance(iterable, (str, bytes)) and len(iterable) > MAX_STRING_CHARS:
            raise TemplateRefused("looping over a string this long is not allowed")
        for count, item in enumerate(iterable):
            budget.iterations += 1
            if budget.iterations > budget.max_iterations:
                raise TemplateRefused(f"the template's loops ran more than {budget.max_iterations} times")
            if count % 1000 == 0:
                budget.tick_time()
            yield item

    def mb_guard_concat(self, parts: list[Any]) -> Any:
        result = jinja2.runtime.markup_join(parts)
        _check_size(result)
        return result

    # attributes and items
    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if _refuse_name(attr):
            return False
        if isinstance(obj, LoopContext):
            return attr in _LOOP_ATTRIBUTES
        if isinstance(obj, (date, datetime)):
            return attr in _DATE_ATTRIBUTES
        return isinstance(obj, Namespace)

    def is_safe_callable(self, obj: Any) -> bool:
        if isinstance(obj, Macro) or obj is _safe_range or obj is Namespace:
            return True
        owner = getattr(obj, "__self__", None)
        func = getattr(obj, "__func__", None)
        if owner is self and func in (InvoiceSandbox.mb_guard_iter, InvoiceSandbox.mb_guard_concat):
            return True
        if isinstance(owner, LoopContext) and getattr(obj, "__name__", "") in ("cycle", "changed"):
            return True
        return False

    def getattr(self, obj: Any, attribute: str) -> Any:
        if _refuse_name(attribute):
            raise TemplateRefused(f"access to '{attribute}' is not allowed in templates")
        if isinstance(obj, Mapping):
            try:
                return obj[attribute]
            except (KeyError, TypeError):
                return self.undefined(obj=obj, name=attribute)
        try:
            value = getattr(obj, attribute)
        except AttributeError:
            return self.undefined(obj=obj, name=attribute)
        if self.is_safe_attribute(obj, attribute, value):
            return value
        raise TemplateRefused(f"'{attribute}' of a {type(obj).__name__} is not available to templates")

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(argument, str):
            if _refuse_name(argument):
                raise TemplateRefused(f"access to '{argument}' is not allowed in templates")
            if isinstance(obj, Mapping):
                try:
                    return obj[argument]
                except (KeyError, TypeError):
                    return self.undefined(obj=obj, name=argument)
            return self.getattr(obj, argument)
        if isinstance(obj, Mapping):
            try:
                return obj[argument]
            except (KeyError, TypeError):
                return self.undefined(obj=obj, name=argument)
        if isinstance(obj, (list, tuple, str, range)) and isinstance(argument, (int, slice)):
            try:
                return obj[argument]
            except IndexError:
                return self.undefined(obj=obj, name=argument)
        return self.undefined(obj=obj, name=argument)

    # calls and operators
    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's signature
        if isinstance(__obj, jinja2.Undefined):
            __obj._fail_with_undefined_error()
        if not __self.is_safe_callable(__obj):
            name = getattr(__obj, "__name__", type(__obj).__name__)
            raise TemplateRefused(f"calling '{name}' is not allowed in templates (use filters instead of methods)")
        budget = _budget()
        budget.calls += 1
        if budget.calls > budget.max_calls:
            raise TemplateRefused(f"the template made more than {budget.max_calls} calls")
        if budget.calls % 100 == 0:
            budget.tick_time()
        for value in list(args) + list(kwargs.values()):
            if isinstance(value, str):
                _check_size(value)
        result = __context.call(__obj, *args, **kwargs)
        if isinstance(result, str):
            _check_size(result)
        return result

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "%" and isinstance(left, str):
            raise TemplateRefused("'%' string formatting is not allowed in templates; use filters")
        if operator == "**":
            if isinstance(right, (int, Decimal)) and abs(right) > MAX_POWER_EXPONENT:
                raise TemplateRefused(f"powers above {MAX_POWER_EXPONENT} are not allowed in templates")
            if isinstance(left, int) and isinstance(right, int) and left.bit_length() * abs(right) > 4096:
                raise TemplateRefused("numbers this large are not allowed in templates")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int):
                    if len(seq) * max(times, 0) > MAX_STRING_CHARS:
                        raise TemplateRefused("repeating a string or list this often is not allowed")
        result = super().call_binop(context, operator, left, right)
        if isinstance(result, (str, list, tuple)):
            _check_size(result)
        return result


def _check_size(value: Sized) -> None:
    if len(value) > MAX_STRING_CHARS:
        raise TemplateRefused(f"a value longer than {MAX_STRING_CHARS} characters is not allowed in templates")


def _safe_range(*args: int) -> range:
    """``range`` for templates: at most :data:`MAX_RANGE` numbers."""
    if not all(isinstance(a, int) for a in args):
        raise TemplateRefused("range() takes whole numbers")
    result = range(*args)
    if len(result) > MAX_RANGE:
        raise TemplateRefused(f"range() of more than {MAX_RANGE} numbers is not allowed in templates")
    return result


def _safe_replace(value: Any, old: Any, new: Any, count: int | None = None) -> Any:
    """Jinja's ``replace`` with the result size checked before it is built."""
    text, old, new = str(value), str(old), str(new)
    occurrences = (len(text) + 1) if old == "" else text.count(old)
    if count is not None:
        occurrences = min(occurrences, max(count, 0))
    if len(text) + occurrences * max(len(new) - len(old), 0) > MAX_STRING_CHARS:
        raise TemplateRefused("replace() would build a string that is too long")
    result = text.replace(old, new, -1 if count is None else count)
    return Markup(result) if isinstance(value, Markup) else result


def css_text(value: Any) -> Markup:
    """CSS for a ``<style>`` element: text that cannot end the element or
    start markup (``<`` becomes the CSS escape ``\\3C``)."""
    if value is None:
        return Markup("")
    return Markup(str(value).replace("<", "\\3C ").replace("\x00", ""))


def make_environment(org_root: Path | str, *, locale: str = "en_US", currency: str = "EUR",
                     max_output: int = MAX_OUTPUT_CHARS) -> InvoiceSandbox:
    """The sandboxed environment for the templates of the org at ``org_root``,
    its formatting filters set to ``locale``."""
    return InvoiceSandbox(Path(org_root) / TEMPLATE_FOLDER, max_output=max_output,
                          formatter=Formatter(locale, currency))


@contextmanager
def _render_budget(seconds: float) -> Iterator[_Budget]:
    token = _BUDGET.set(_Budget(time.monotonic() + seconds))
    try:
        yield _BUDGET.get()  # type: ignore[misc]
    finally:
        _BUDGET.reset(token)


def render_template(env: InvoiceSandbox, name: str, context: Mapping[str, Any], *,
                    seconds: float = MAX_SECONDS) -> str:
    """Render templates/<name> with ``context`` inside the limits; raises
    the template's error (see :func:`describe_error`)."""
    with _render_budget(seconds) as budget:
        template = env.get_template(name)
        chunks: list[str] = []
        size = 0
        for chunk in template.generate(dict(context)):
            size += len(chunk)
            if size > env.max_output:
                raise TemplateRefused(f"the document is larger than {env.max_output} characters")
            chunks.append(chunk)
            budget.tick_time()
    return "".join(chunks)


@dataclass(frozen=True)
class TemplateErrorInfo:
    """A template error for people: what kind, the message, and where
    (``file`` relative to the org root, e.g. ``templates/invoice.html.j2``)."""

    kind: str  # syntax | undefined | refused | load | runtime
    message: str
    file: str | None
    line: int | None

    @property
    def where(self) -> str:
        if self.file is None:
            return "?"
        return f"{self.file}:{self.line}" if self.line else self.file


def describe_error(error: BaseException, env: InvoiceSandbox, template_name: str) -> TemplateErrorInfo:
    """Classify a render error and find its template ``file:line``: the line
    of a syntax error, else the innermost template frame of the traceback."""
    root = env.root.resolve()
    prefix = TEMPLATE_FOLDER

    def relative(filename: str | None) -> str | None:
        if not filename:
            return None
        try:
            return f"{prefix}/{Path(filename).resolve().relative_to(root).as_posix()}"
        except (ValueError, OSError):
            return None

    if isinstance(error, TemplateSyntaxError):
        file = relative(error.filename) or (f"{prefix}/{error.name}" if error.name else f"{prefix}/{template_name}")
        return TemplateErrorInfo("syntax", error.message or str(error), file, error.lineno)
    file, line = None, None
    for frame in traceback.extract_tb(error.__traceback__):
        found = relative(frame.filename)
        if found is not None:
            file, line = found, frame.lineno
    if isinstance(error, TemplateRefused) or isinstance(error, SecurityError):
        kind = "refused"
    elif isinstance(error, UndefinedError):
        kind = "undefined"
    elif isinstance(error, TemplateNotFound):
        kind = "load"
    elif isinstance(error, RecursionError):
        kind, error = "refused", TemplateRefused("the template recursed too deeply")
    else:
        kind = "runtime"
    if isinstance(error, TemplateNotFound):
        message = f"template '{error.name}' not found in templates/"
    elif kind == "runtime":
        message = f"{type(error).__name__}: {error}"
    else:
        message = str(error) or type(error).__name__
    if file is None:
        file = f"{prefix}/{template_name}"
    return TemplateErrorInfo(kind, message, file, line)


# --- formatting ---------------------------------------------------------------------

CENT = Decimal("0.01")


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, float):
        raise TypeError("amounts are Decimal, never float")
    if isinstance(value, bool):
        return Decimal(int(value))
    try:
        return Decimal(value) if not isinstance(value, Decimal) else value
    except (InvalidOperation, ValueError, TypeError):
        raise TypeError(f"{value!r} is not a number") from None


def round_money(value: Any) -> Decimal | None:
    """Round half up to cents (the only rounding before display)."""
    amount = _decimal(value)
    return None if amount is None else amount.quantize(CENT, rounding=ROUND_HALF_UP)


class Formatter:
    """Locale formatting with babel: amounts (rounded half up to 2 decimals
    first, Decimal only), currencies, dates, percentages, quantities."""

    def __init__(self, locale: str = "en_US", currency: str = "EUR"):
        from babel import Locale

        self.locale_name = locale
        self.locale = Locale.parse(locale)
        self.currency = currency

    def money(self, value: Any) -> str:
        from babel.numbers import format_decimal

        amount = round_money(value)
        if amount is None:
            return ""
        return format_decimal(amount, format="#,##0.00", locale=self.locale, decimal_quantization=True)

    def currency_amount(self, value: Any, currency: str | None = None) -> str:
        from babel.numbers import format_currency

        amount = round_money(value)
        if amount is None:
            return ""
        return format_currency(amount, currency or self.currency, locale=self.locale)

    def date(self, value: Any, style: str = "medium") -> str:
        from babel.dates import format_date

        if value is None or value == "":
            return ""
        if isinstance(value, datetime):
            value = value.date()
        if not isinstance(value, date):
            return str(value)
        return format_date(value, format=style if style in ("short", "medium", "long", "full") else "medium",
                           locale=self.locale)

    def percent(self, value: Any) -> str:
        from babel.numbers import format_decimal

        rate = _decimal(value)
        if rate is None:
            return ""
        rate = rate.quantize(CENT, rounding=ROUND_HALF_UP)
        text = format_decimal(rate, format="#,##0.00", locale=self.locale)
        return f"{text}\u00a0%" if self.locale.language == "de" else f"{text}%"

    def number(self, value: Any) -> str:
        from babel.numbers import format_decimal

        number = _decimal(value)
        if number is None:
            return ""
        number = number.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)
        return format_decimal(number, format="#,##0.####", locale=self.locale)

    def value(self, fdef: FieldDef | None, value: Any) -> str:
        """A field value as printed: by the field's type."""
        if value is None:
            return ""
        kind = fdef.value_type if fdef is not None else None
        if kind is FieldType.CURRENCY or (kind is None and isinstance(value, Decimal)):
            return self.money(value)
        if kind is FieldType.PERCENT:
            return self.percent(value)
        if kind is FieldType.NUMBER:
            return self.number(value)
        if isinstance(value, (date, datetime)):
            return self.date(value)
        if isinstance(value, bool):
            return "✓" if value else ""
        return str(value)

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"money": self.money, "currency": self.currency_amount, "date": self.date,
                "percent": self.percent, "number": self.number}


# --- template settings ---------------------------------------------------------------

DEFAULT_BALANCE_COLUMNS = ("BalanceTitle", "Date", "Amount")
BALANCE_TITLE = "BalanceTitle"
DIRECT_DEBIT_METHODS = frozenset({"Direct Debit", "SEPA"})
_PLACEHOLDER = re.compile(r"\[([A-Za-z][A-Za-z0-9_]*)\]")


@dataclass(frozen=True)
class SettingProblem:
    """A problem in a Template record's values (code E124-E129)."""

    code: str
    field: str
    message: str
    hint: str | None = None


@dataclass(frozen=True)
class TemplateSettings:
    """A Template record, parsed: what the renderer and the templates use."""

    name: str
    file: str
    locale: str
    balance_columns: tuple[str, ...]
    balance_types: tuple[tuple[str, str], ...]  # (Balance.Type, title with placeholders), in order
    override_labels: Mapping[str, Mapping[str, str]]
    custom_css: str
    payment_terms: str
    header: str
    footer: str
    problems: tuple[SettingProblem, ...] = ()


def parse_template_settings(model: OrgModel, record: SettingRecord) -> TemplateSettings:
    """Parse a Template record; problems are collected, never raised, and the
    value in question falls back to its default (columns), nothing (types) or
    no overrides (labels), so a render still works."""
    from babel import Locale, UnknownLocaleError

    problems: list[SettingProblem] = []
    balance = model.object("Balance")
    columns_text = str(record.get("BalanceColumns") or ";".join(DEFAULT_BALANCE_COLUMNS))
    columns: list[str] = []
    for raw in columns_text.split(";"):
        name = raw.strip()
        if not name:
            continue
        canonical = _balance_column(balance, name)
        if canonical is None:
            candidates = [BALANCE_TITLE] + ([f.name for f in balance.fields] if balance else [])
            problems.append(SettingProblem("E124", "BalanceColumns",
                                           f"template '{record.name}': BalanceColumns names '{name}', which is "
                                           "neither BalanceTitle nor a Balance field",
                                           did_you_mean(name, candidates)))
            continue
        columns.append(canonical)
    if not columns:
        columns = list(DEFAULT_BALANCE_COLUMNS)

    types: list[tuple[str, str]] = []
    types_text = record.get("BalanceTypes")
    if types_text is not None and str(types_text).strip():
        parsed, error = _json(str(types_text))
        if error is None and not (isinstance(parsed, list) and all(
                isinstance(e, dict) and isinstance(e.get("type"), str) and isinstance(e.get("title", ""), str)
                and set(e) <= {"type", "title"} for e in parsed)):
            error = 'it must be a JSON list of {"type": ..., "title": ...} objects'
        if error is not None:
            problems.append(SettingProblem("E125", "BalanceTypes",
                                           f"template '{record.name}': BalanceTypes is not valid: {error}",
                                           'example: [{"type": "Payment", "title": "Payment"}]'))
        else:
            known = _picklist(balance, "Type")
            for entry in parsed:
                if known and entry["type"] not in known:
                    problems.append(SettingProblem("E125", "BalanceTypes",
                                                   f"template '{record.name}': BalanceTypes maps '{entry['type']}', "
                                                   "which is not a value of Balance.Type",
                                                   did_you_mean(entry["type"], sorted(known))))
                    continue
                title = entry.get("title", entry["type"])
                for placeholder in _PLACEHOLDER.findall(title):
                    if not _balance_placeholder_known(balance, placeholder):
                        problems.append(SettingProblem("E127", "BalanceTypes",
                                                       f"template '{record.name}': the title of balance type "
                                                       f"'{entry['type']}' uses the unknown placeholder "
                                                       f"[{placeholder}]",
                                                       "use [RelatedInvoiceNo] or [<Balance field>]"))
                types.append((entry["type"], title))

    labels: dict[str, dict[str, str]] = {}
    labels_text = record.get("OverrideLabels")
    if labels_text is not None and str(labels_text).strip():
        parsed, error = _json(str(labels_text))
        if error is None and not (isinstance(parsed, dict) and all(
                isinstance(group, dict) and all(isinstance(v, str) for v in group.values())
                for group in parsed.values())):
            error = 'it must be a JSON object {"Object": {"Field": "Label"}}'
        if error is not None:
            problems.append(SettingProblem("E126", "OverrideLabels",
                                           f"template '{record.name}': OverrideLabels is not valid: {error}"))
        else:
            labels = {str(k): dict(v) for k, v in parsed.items()}

    locale = str(record.get("Locale") or "en_US")
    try:
        Locale.parse(locale)
    except (ValueError, UnknownLocaleError, TypeError):
        problems.append(SettingProblem("E128", "Locale", f"template '{record.name}': unknown locale '{locale}'",
                                       "use a locale such as en_US, en_GB or de_DE"))
        locale = "en_US"

    terms = str(record.get("PaymentTerms") or "")
    invoice = model.object("Invoice")
    for text_field in ("PaymentTerms", "Header", "Footer"):
        for placeholder in _PLACEHOLDER.findall(str(record.get(text_field) or "")):
            if not _invoice_placeholder_known(model, invoice, placeholder):
                problems.append(SettingProblem("E127", text_field,
                                               f"template '{record.name}': {text_field} uses the unknown "
                                               f"placeholder [{placeholder}]",
                                               "use [<Invoice field>], [BusinessEntity<field>] or [PaymentAmount]"))
    return TemplateSettings(
        name=record.name,
        file=str(record.get("File") or ""),
        locale=locale,
        balance_columns=tuple(columns),
        balance_types=tuple(types),
        override_labels=MappingProxyType(labels),
        custom_css=str(record.get("CustomCss") or ""),
        payment_terms=terms,
        header=str(record.get("Header") or ""),
        footer=str(record.get("Footer") or ""),
        problems=tuple(problems),
    )


def default_template_records(model: OrgModel) -> list[SettingRecord]:
    return [r for r in model.setting_records("Template") if r.get("Default")]


def select_template_record(model: OrgModel, template_name: str | None) -> SettingRecord:
    """The Template record of an invoice: the one it names, else the default
    one. Raises LookupError with a message for people."""
    if template_name:
        found = model.setting_record("Template", template_name)
        if found is None:
            raise LookupError(f"names the unknown template '{template_name}'")
        return found
    defaults = default_template_records(model)
    if len(defaults) != 1:
        raise LookupError("names no template and the org has "
                          + ("no default Template record" if not defaults else "several default Template records"))
    return defaults[0]


def _json(text: str) -> tuple[Any, str | None]:
    try:
        return json.loads(text), None
    except json.JSONDecodeError as error:
        return None, f"{error.msg} at line {error.lineno} column {error.colno} of the JSON"


def _picklist(obj: Any, field_name: str) -> set[str]:
    fdef = obj.field(field_name) if obj is not None else None
    return {str(v) for v in (fdef.values if fdef is not None else ())}


def _balance_column(balance: Any, name: str) -> str | None:
    if name.lower() == BALANCE_TITLE.lower():
        return BALANCE_TITLE
    if balance is None:
        return None
    fdef = balance.field(name)
    if fdef is None and name.endswith("__c"):
        # the seed writes product fields with the Salesforce suffix (Date__c): accept it
        # for product fields, where our metadata drops the suffix.
        plain = balance.field(name[:-3])
        fdef = plain if plain is not None and not plain.is_custom else None
    return fdef.name if fdef is not None else None


def _balance_placeholder_known(balance: Any, name: str) -> bool:
    return name == "RelatedInvoiceNo" or (balance is not None and balance.field(name) is not None)


def _invoice_placeholder_known(model: OrgModel, invoice: Any, name: str) -> bool:
    if name in CALCULATED_PLACEHOLDERS:
        return True
    if invoice is not None and invoice.field(name) is not None:
        return True
    if name.startswith("BusinessEntity"):
        entity = model.object("BusinessEntity")
        rest = name[len("BusinessEntity"):]
        return rest == "Name" or (entity is not None and entity.field(rest) is not None)
    return False


CALCULATED_PLACEHOLDERS = frozenset({"PaymentAmount", "BankAccountMasked"})


# --- labels ----------------------------------------------------------------------------

#: Generic labels (domain-spec §9.1 "Calculated") per language.
CALCULATED_LABELS: Mapping[str, Mapping[str, str]] = {
    "en": {
        "PageLabel": "Page", "OfLabel": "of", "PosNo": "Pos.", "SubTotalNet": "Subtotal (net)",
        "SubTotalNetNoDiscount": "Subtotal (net)", "Tax": "Tax", "TotalTax": "Total Tax", "GrandTotal": "Grand Total",
        "PaymentAmount": "Payment Amount", "RefundAmount": "Refund Amount", "RoundingDifference": "Rounding difference",
        "Credit": "Credit", "ServicePeriod": "Service period", "Invoice": "Invoice", "Customer": "Customer",
        "PaymentTerms": "Payment terms", "SepaMandate": "SEPA direct debit",
        "SepaMandateText": "We will collect the amount of [PaymentAmount] by SEPA direct debit from your account "
                           "[BankAccountMasked] on or after [PaymentDueDate] (mandate reference "
                           "[DirectDebitMandateReference], creditor ID [BusinessEntitySEPACreditorId]).",
        "SubInvoices": "Sub invoices settled by this final invoice", "FinalInvoice": "Final Invoice", "Cancellation": "Cancellation", "TotalServices": "Total services",
        "LessReceived": "less sub invoices", "Deduction": "Deduction for", "TaxId": "VAT ID",
        "TaxNumber": "Tax number", "Bank": "Bank", "ManagingDirectors": "Managing directors",
        "Page": "Page",
    },
    "de": {
        "PageLabel": "Seite", "OfLabel": "von", "PosNo": "Pos.", "SubTotalNet": "Zwischensumme (netto)",
        "SubTotalNetNoDiscount": "Zwischensumme (netto)", "Tax": "USt.", "TotalTax": "Umsatzsteuer",
        "GrandTotal": "Gesamtbetrag", "PaymentAmount": "Zahlbetrag", "RefundAmount": "Erstattungsbetrag",
        "RoundingDifference": "Rundungsdifferenz", "Credit": "Gutschrift", "ServicePeriod": "Leistungszeitraum",
        "Invoice": "Rechnung", "Customer": "Kunde", "PaymentTerms": "Zahlungsbedingungen",
        "SepaMandate": "SEPA-Lastschrift",
        "SepaMandateText": "Den Betrag von [PaymentAmount] ziehen wir per SEPA-Lastschrift von Ihrem Konto "
                           "[BankAccountMasked] frühestens am [PaymentDueDate] ein (Mandatsreferenz "
                           "[DirectDebitMandateReference], Gläubiger-ID [BusinessEntitySEPACreditorId]).",
        "SubInvoices": "Mit dieser Schlussrechnung abgerechnete Teilrechnungen", "FinalInvoice": "Schlussrechnung", "Cancellation": "Stornorechnung", "TotalServices": "Gesamtleistung",
        "LessReceived": "abzüglich Teilrechnungen", "Deduction": "Abzug für", "TaxId": "USt-IdNr.",
        "TaxNumber": "Steuernummer", "Bank": "Bank", "ManagingDirectors": "Geschäftsführung",
        "Page": "Seite",
    },
}

#: German field labels of the fields the default template prints.
GERMAN_FIELD_LABELS: Mapping[str, Mapping[str, str]] = {
    "Invoice": {"Name": "Rechnungsnummer", "Date": "Rechnungsdatum", "PaymentDueDate": "Fällig am",
                "TotalNet": "Summe netto", "TotalTax": "Umsatzsteuer", "GrandTotal": "Gesamtbetrag",
                "ServicePeriodStart": "Leistungsbeginn", "ServicePeriodEnd": "Leistungsende",
                "DebtorNo__c": "Kundennummer", "PurchaseOrderNo__c": "Bestellnummer",
                "DirectDebitMandateReference": "Mandatsreferenz", "PaymentMethod": "Zahlungsart"},
    "InvoiceLineItem": {"Sequence": "Pos.", "Title": "Bezeichnung", "Quantity": "Menge", "Unit": "Einheit",
                        "UnitPrice": "Einzelpreis", "TaxRate": "USt.", "PosTotalNet": "Gesamt"},
    "Balance": {"Date": "Datum", "Amount": "Betrag", "Type": "Art", "Reference": "Referenz",
                "Name": "Saldo-Nr.", "TransactionNo": "Transaktionsnr."},
}

_LABEL_OBJECTS = ("Invoice", "InvoiceLineItem", "Balance", "Account")


def build_labels(model: OrgModel, settings: TemplateSettings) -> dict[str, dict[str, str]]:
    """Labels for templates: metadata field labels, the language's built-in
    labels, then the template's OverrideLabels."""
    language = settings.locale.split("_")[0].lower()
    labels: dict[str, dict[str, str]] = {}
    for object_name in _LABEL_OBJECTS:
        obj = model.object(object_name)
        group = {f.name: f.label or f.name for f in obj.fields} if obj is not None else {}
        group.setdefault("Name", "Name")
        if language == "de":
            group.update(GERMAN_FIELD_LABELS.get(object_name, {}))
        labels[object_name] = group
    labels["Calculated"] = dict(CALCULATED_LABELS.get(language, CALCULATED_LABELS["en"]))
    for group, values in settings.override_labels.items():
        labels.setdefault(group, {}).update(values)
    labels["Balance"][BALANCE_TITLE] = labels["Balance"].get(BALANCE_TITLE, "")
    return labels


# --- the document context -------------------------------------------------------------------


@dataclass
class DocumentInput:
    """One invoice's data as plain dicts keyed by field API name (``Name``,
    ``GrandTotal``, ``Title__c``): what the documents package reads from the
    database and the sample invoice provides for validate-config.

    ``balances`` are the Balance records whose Invoice is this invoice (each
    with ``RelatedInvoiceNo``, the related invoice's number); ``sub_invoices``
    the invoices deducted on a final invoice."""

    invoice: dict[str, Any]
    lines: list[dict[str, Any]]
    balances: list[dict[str, Any]] = field(default_factory=list)
    account: dict[str, Any] = field(default_factory=dict)
    business_entity: dict[str, Any] = field(default_factory=dict)
    sub_invoices: list[dict[str, Any]] = field(default_factory=list)


def fill_placeholders(text: str, resolve: Callable[[str], str | None]) -> str:
    """Replace ``[Name]`` by ``resolve(Name)``; unknown names stay as written."""

    def one(match: re.Match) -> str:
        found = resolve(match.group(1))
        return match.group(0) if found is None else found

    return _PLACEHOLDER.sub(one, text)


def balance_rows(model: OrgModel, settings: TemplateSettings, balances: Iterable[Mapping[str, Any]],
                 fmt: Formatter) -> list[dict[str, Any]]:
    """The printed balance rows (seed 002, domain-spec §9.2): balances of
    a listed type (not the invoice's own ``Invoice`` balance, not drafts),
    ordered by date and name, titled by the mapping with placeholders
    resolved, one cell per BalanceColumns entry."""
    balance = model.object("Balance")
    titles = dict(settings.balance_types)
    rows = []
    shown = [b for b in balances if b.get("Type") != "Invoice" and not b.get("Draft") and b.get("Type") in titles]
    shown.sort(key=lambda b: (b.get("Date") or date.min, str(b.get("Name") or ""), b.get("Id") or 0))
    for record in shown:
        def resolve(name: str, record: Mapping[str, Any] = record) -> str | None:
            if name == "RelatedInvoiceNo":
                return str(record.get("RelatedInvoiceNo") or "")
            fdef = balance.field(name) if balance is not None else None
            return fmt.value(fdef, record.get(fdef.name)) if fdef is not None else None

        title = fill_placeholders(titles[record["Type"]], resolve)
        cells = []
        for column in settings.balance_columns:
            if column == BALANCE_TITLE:
                cells.append({"name": column, "text": title, "numeric": False})
            else:
                fdef = balance.field(column) if balance is not None else None
                cells.append({"name": column, "text": fmt.value(fdef, record.get(column)),
                              "numeric": fdef is not None and (fdef.value_type.is_numeric
                                                                  or fdef.value_type is FieldType.DATE)})
        rows.append({**record, "title": title, "cells": cells})
    return rows


def payment_amount(invoice: Mapping[str, Any], balances: Iterable[Mapping[str, Any]]) -> Decimal:
    """Grand total plus every balance on the invoice except its own Invoice
    balance and drafts: hidden types reduce the amount too (domain-spec §9.2)."""
    total = round_money(invoice.get("GrandTotal")) or Decimal("0.00")
    for record in balances:
        if record.get("Type") == "Invoice" or record.get("Draft"):
            continue
        total += round_money(record.get("Amount")) or Decimal("0.00")
    return total


def document_context(model: OrgModel, settings: TemplateSettings, data: DocumentInput) -> dict[str, Any]:
    """Everything a template sees: ``invoice`` (all fields, ``lines``,
    ``positions`` (lines without deductions), ``deductions``, ``tax_rates``,
    ``balance_rows``, ``payment_amount``, ``sub_invoices``, ``is_final``,
    ``is_direct_debit``), ``account``, ``business_entity``, ``template``,
    ``labels``, ``texts`` (payment terms and SEPA text with placeholders
    filled) and ``locale``/``lang``."""
    currency = str(data.invoice.get("CurrencyIsoCode") or "EUR")
    fmt = Formatter(settings.locale, currency)
    invoice_obj = model.object("Invoice")
    entity_obj = model.object("BusinessEntity")
    lines = sorted(data.lines, key=lambda l: (l.get("IsDeduction") or False, l.get("Sequence") or 0, l.get("Id") or 0))
    positions = [dict(l) for l in lines if not l.get("IsDeduction")]
    deductions = [dict(l) for l in lines if l.get("IsDeduction")]
    rates: dict[Decimal, dict[str, Decimal]] = {}
    for line in lines:
        rate = _decimal(line.get("TaxRate")) or Decimal("0")
        rate = rate.normalize() if rate else Decimal("0")
        bucket = rates.setdefault(rate, {"rate": rate, "net": Decimal("0.00"), "tax": Decimal("0.00")})
        bucket["net"] += round_money(line.get("PosTotalNet")) or Decimal("0.00")
        bucket["tax"] += round_money(line.get("PosTotalTax")) or Decimal("0.00")
    amount = payment_amount(data.invoice, data.balances)
    is_direct_debit = str(data.invoice.get("PaymentMethod") or "") in DIRECT_DEBIT_METHODS
    iban = str(data.invoice.get("BankAccount") or "")
    masked = (iban[:4] + " **** " + iban[-4:]) if len(iban) > 8 else iban

    def resolve(name: str) -> str | None:
        if name == "PaymentAmount":
            return fmt.currency_amount(amount, currency)
        if name == "BankAccountMasked":
            return masked
        fdef = invoice_obj.field(name) if invoice_obj is not None else None
        if fdef is not None:
            return fmt.value(fdef, data.invoice.get(fdef.name))
        if name.startswith("BusinessEntity"):
            rest = name[len("BusinessEntity"):]
            efield = entity_obj.field(rest) if entity_obj is not None else None
            if efield is not None:
                return fmt.value(efield, data.business_entity.get(efield.name))
            if rest == "Name":
                return str(data.business_entity.get("Name") or "")
        return None

    labels = build_labels(model, settings)
    invoice = dict(data.invoice)
    invoice.update({
        "lines": [dict(l) for l in lines],
        "positions": positions,
        "deductions": deductions,
        "tax_rates": [rates[k] for k in sorted(rates)],
        "balance_rows": balance_rows(model, settings, data.balances, fmt),
        "payment_amount": amount,
        "sub_invoices": [dict(s) for s in data.sub_invoices],
        "is_final": invoice.get("Type") == "Final",
        "is_credit": invoice.get("Class") == "Credit",
        "is_cancellation": invoice.get("Type") == "Cancelation",
        "is_direct_debit": is_direct_debit,
        "positions_net": sum((round_money(l.get("PosTotalNet")) or Decimal("0.00") for l in positions),
                             Decimal("0.00")),
        "deductions_net": sum((round_money(l.get("PosTotalNet")) or Decimal("0.00") for l in deductions),
                              Decimal("0.00")),
    })
    template = {
        "Name": settings.name,
        "File": settings.file,
        "Locale": settings.locale,
        "balance_columns": [{"name": c, "label": labels["Balance"].get(c, c)} for c in settings.balance_columns],
        "custom_css": settings.custom_css,
        "header": fill_placeholders(settings.header, resolve),
        "footer": fill_placeholders(settings.footer, resolve),
    }
    # Payment terms and the direct-debit notice only when something is to be paid.
    texts = {
        "payment_terms": fill_placeholders(settings.payment_terms, resolve) if amount > 0 else "",
        "sepa_mandate": fill_placeholders(labels["Calculated"].get("SepaMandateText", ""), resolve)
        if is_direct_debit and amount > 0 else "",
    }
    return {
        "invoice": invoice,
        "account": dict(data.account),
        "business_entity": dict(data.business_entity),
        "template": template,
        "labels": labels,
        "texts": texts,
        "locale": settings.locale,
        "lang": settings.locale.split("_")[0].lower(),
        "currency": currency,
    }


def render_document(org_root: Path | str, model: OrgModel, settings: TemplateSettings, data: DocumentInput,
                    *, max_output: int = MAX_OUTPUT_CHARS, seconds: float = MAX_SECONDS) -> str:
    """Render one invoice's HTML with its Template settings (raises the
    template error; :func:`describe_error` locates it)."""
    problem = template_path_problem(settings.file)
    if problem:
        raise TemplateRefused(f"template '{settings.name}': {problem}")
    currency = str(data.invoice.get("CurrencyIsoCode") or "EUR")
    env = make_environment(org_root, locale=settings.locale, currency=currency, max_output=max_output)
    return render_template(env, settings.file, document_context(model, settings, data), seconds=seconds)


# --- the sample invoice of validate-config ------------------------------------------------------


def _sample_value(fdef: FieldDef) -> Any:
    kind = fdef.type
    if kind is FieldType.CHECKBOX:
        return False
    return None


def _record(obj: Any, values: Mapping[str, Any]) -> dict[str, Any]:
    record = {f.name: _sample_value(f) for f in obj.fields} if obj is not None else {}
    record.update(values)
    return record


def sample_inputs(model: OrgModel, settings: TemplateSettings) -> list[DocumentInput]:
    """Two sample invoices every template must render: a standard invoice
    paid by bank transfer with one balance of each mapped type, and a final
    invoice collected by direct debit with a deducted sub invoice. Every
    field of the metadata is present (empty when it has no sample value), so
    a template may print any field, and only names that exist nowhere fail."""
    inv = model.object("Invoice")
    line = model.object("InvoiceLineItem")
    bal = model.object("Balance")
    acc = model.object("Account")
    ent = model.object("BusinessEntity")
    entity_record = next((r for r in model.setting_records("BusinessEntity") if r.get("Default")), None)
    entity_values = {f.name: None for f in ent.fields} if ent is not None else {}
    if entity_record is not None and ent is not None:
        entity_values.update({f.name: entity_record.get(f.name) for f in ent.fields})
        entity_values["Name"] = entity_record.name
    else:
        entity_values.update({"Name": "SAMPLE", "Company": "Sample GmbH", "Street": "Musterweg 1",
                              "PostalCode": "10115", "City": "Berlin", "Country": "Deutschland"})
    account = _record(acc, {"Name": "Sample Customer AG", "Id": 1})
    invoice_values = {
        "Id": 1, "Name": "INV-SAMPLE-0001", "Status": "Open", "Class": "Invoice", "Type": "Standard",
        "Date": date(2024, 9, 30), "PaymentDue": Decimal("14"), "PaymentDueDate": date(2024, 10, 14),
        "PaymentMethod": "Bank Transfer", "CurrencyIsoCode": "EUR", "AccountName": "Sample Customer AG",
        "BillingStreet": "Beispielstraße 5", "BillingPostalCode": "80331", "BillingCity": "München",
        "BillingCountry": "Deutschland", "BusinessEntity": entity_values.get("Name"), "Template": settings.name,
        "ServicePeriodStart": date(2024, 9, 1), "ServicePeriodEnd": date(2024, 9, 30),
        "TotalNet": Decimal("25.00"), "TotalTax": Decimal("4.75"), "GrandTotal": Decimal("29.75"),
        "Balance": Decimal("29.75"), "Account": 1,
    }
    lines = [
        _record(line, {"Id": 1, "Invoice": 1, "Sequence": Decimal("1"), "Title": "Product 1",
                       "Quantity": Decimal("1.0000"), "UnitPrice": Decimal("25.0000"), "TaxRate": Decimal("19.000"),
                       "PosTotalNet": Decimal("25.00"), "PosTotalTax": Decimal("4.75"),
                       "PosTotalGross": Decimal("29.75"), "IsDeduction": False}),
    ]
    balances = [_record(bal, {"Id": 1, "Name": "BAL-SAMPLE-1", "Type": "Invoice", "Amount": Decimal("29.75"),
                              "Date": date(2024, 9, 30), "Invoice": 1, "Account": 1, "RelatedInvoiceNo": None})]
    for number, (balance_type, _title) in enumerate(settings.balance_types, start=2):
        balances.append(_record(bal, {"Id": number, "Name": f"BAL-SAMPLE-{number}", "Type": balance_type,
                                      "Amount": Decimal("-1.00"), "Date": date(2024, 10, 1), "Invoice": 1,
                                      "Account": 1, "RelatedInvoice": 2, "RelatedInvoiceNo": "INV-SAMPLE-0002"}))
    standard = DocumentInput(_record(inv, invoice_values), lines, balances, account, dict(entity_values))
    sub = _record(inv, {**invoice_values, "Id": 2, "Name": "INV-SAMPLE-0002", "Type": "Progress",
                        "Date": date(2024, 6, 30), "FinalInvoice": 3})
    final_values = {**invoice_values, "Id": 3, "Name": "INV-SAMPLE-0003", "Type": "Final",
                    "PaymentMethod": "Direct Debit", "BankAccount": "DE89370400440532013000",
                    "DirectDebitMandateReference": "MANDATE-1", "DirectDebitMandateGranted": date(2024, 1, 2),
                    "TotalNet": Decimal("15.00"), "TotalTax": Decimal("2.85"), "GrandTotal": Decimal("17.85")}
    final_lines = lines + [
        _record(line, {"Id": 2, "Invoice": 3, "Sequence": Decimal("2"), "Title": "INV-SAMPLE-0002",
                       "Quantity": Decimal("1.0000"), "UnitPrice": Decimal("-10.0000"),
                       "TaxRate": Decimal("19.000"), "PosTotalNet": Decimal("-10.00"),
                       "PosTotalTax": Decimal("-1.90"), "PosTotalGross": Decimal("-11.90"), "IsDeduction": True,
                       "SubInvoice": 2, "SubInvoiceNo": "INV-SAMPLE-0002"}),
    ]
    final = DocumentInput(_record(inv, final_values), final_lines, [], account, dict(entity_values), [sub])
    return [standard, final]


def check_template_record(org_root: Path | str, model: OrgModel, record: SettingRecord
                          ) -> tuple[TemplateSettings, list[TemplateErrorInfo]]:
    """validate-config's view of one Template record: its parsed settings
    (with their problems) and the template errors of rendering the sample
    invoices (at most one per template file and kind)."""
    settings = parse_template_settings(model, record)
    errors: list[TemplateErrorInfo] = []
    if template_path_problem(settings.file):
        return settings, errors
    seen: set[tuple] = set()
    for data in sample_inputs(model, settings):
        currency = str(data.invoice.get("CurrencyIsoCode") or "EUR")
        env = make_environment(org_root, locale=settings.locale, currency=currency)
        try:
            render_template(env, settings.file, document_context(model, settings, data), seconds=5.0)
        except Exception as error:  # noqa: BLE001 - every template error is a finding
            info = describe_error(error, env, settings.file)
            key = (info.kind, info.file, info.line, info.message)
            if key not in seen:
                seen.add(key)
                errors.append(info)
            if info.kind in ("syntax", "load"):
                break  # the second sample fails the same way
    return settings, errors
