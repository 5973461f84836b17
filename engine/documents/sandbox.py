"""The sandboxed Jinja2 environment every invoice template runs in.

Templates are treated as hostile user code. They come from the org directory
(``templates/``), are written by whoever configures the org, and run inside
the engine, so this module is the one place that decides what a template may
do. validate-config renders every template against the sample invoices
(:mod:`.sample`) and ``metabill render`` renders the real ones
(:mod:`.render`), both here; the settings a template reads are in
:mod:`.template_records`, the data it sees in :mod:`.context`.

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
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sized

import jinja2
from jinja2 import nodes
from jinja2.bccache import Bucket, BytecodeCache
from jinja2.exceptions import (
    SecurityError,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
)
from jinja2.runtime import LoopContext, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace
from jinja2.visitor import NodeTransformer
from markupsafe import Markup

from .formatting import Formatter

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


_REFUSED_NAMES = frozenset(("mro", "func_globals", "gi_frame", "gi_code", "cr_frame", "f_globals"))


def _refuse_name(name: object) -> bool:
    text = name if type(name) is str else str(name)
    return text.startswith("_") or text in _REFUSED_NAMES


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
        if type(obj) is dict or isinstance(obj, Mapping):  # dicts first: the ABC check is slow
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
            if type(obj) is dict or isinstance(obj, Mapping):
                try:
                    return obj[argument]
                except (KeyError, TypeError):
                    return self.undefined(obj=obj, name=argument)
            return self.getattr(obj, argument)
        if type(obj) is dict or isinstance(obj, Mapping):
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
