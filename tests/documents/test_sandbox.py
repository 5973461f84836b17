"""The template sandbox refuses known template-injection payloads, stays
inside templates/, enforces its limits and locates errors at file:line."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pytest

from engine.documents.sandbox import TemplateRefused, describe_error, make_environment, render_template

SECRET = "metabill-secret-value"

CONTEXT = {"invoice": {"Name": "INV-1", "Title": "<b>x</b>"}, "d": date(2024, 1, 2)}

#: (payload, kind of failure)
PAYLOADS = {
    "mro-subclasses": ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "refused"),
    "template-reference-context": ("{{ self._TemplateReference__context }}", "refused"),
    "cycler-globals": ("{{ cycler.__init__.__globals__ }}", "refused"),
    "lipsum-globals": ("{{ lipsum.__globals__ }}", "refused"),
    "joiner": ("{{ joiner() }}", "undefined"),
    "lipsum-call": ("{{ lipsum() }}", "undefined"),
    "config": ("{{ config }}", "undefined"),
    "config-items": ("{{ config.items() }}", "undefined"),
    "request": ("{{ request.application.__globals__ }}", "undefined"),
    "include-passwd": ("{% include '../../etc/passwd' %}", "refused"),
    "include-absolute": ("{% include '/etc/passwd' %}", "refused"),
    "import-traversal": ("{% import '../secret.txt' as s %}", "refused"),
    "extends-traversal": ("{% extends 'a/../../secret.txt' %}", "refused"),
    "huge-range": ("{% for i in range(10**9) %}{% endfor %}", "refused"),
    "nested-loops": ("{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}", "refused"),
    "string-format-method": ("{{ '{0.__class__.__init__.__globals__}'.format(invoice) }}", "refused"),
    "format-map": ("{{ '{0}'.format_map(invoice) }}", "refused"),
    "format-filter": ("{{ '%s'|format(invoice) }}", "syntax"),
    "percent-format": ("{{ '%*d' % (1000000000, 1) }}", "refused"),
    "string-repeat": ("{{ 'x' * 1000000000 }}", "refused"),
    "huge-power": ("{{ 9 ** 9999999 }}", "refused"),
    "attr-filter": ("{{ invoice|attr('__class__') }}", "syntax"),
    "getitem-dunder": ("{{ invoice['__class__'] }}", "refused"),
    "method-on-dict": ("{{ invoice.items() }}", "undefined"),
    "method-on-string": ("{{ invoice.Name.upper() }}", "refused"),
    "method-on-date": ("{{ d.replace(year=1) }}", "refused"),
    "loop-class": ("{% for i in [1] %}{{ loop.__class__ }}{% endfor %}", "refused"),
    "recursive-macro-blowup": ("{% macro d(s) %}{{ d(s ~ s) }}{% endmacro %}{{ d('x') }}", "refused"),
    "replace-blowup": ("{{ ('x' * 1000)|replace('x', 'x' * 1000)|replace('x', 'x' * 1000) }}", "refused"),
    "random-filter": ("{{ [1, 2]|random }}", "syntax"),
    "recursive-loop": ("{% for i in [1] recursive %}{{ loop([1]) }}{% endfor %}", "syntax"),
    "range-globals": ("{{ range.__globals__ }}", "refused"),
    "namespace-init": ("{{ namespace.__init__ }}", "refused"),
    "mro-attribute": ("{{ invoice.mro }}", "refused"),
}


@pytest.fixture
def org(tmp_path: Path) -> Path:
    (tmp_path / "org" / "templates" / "parts").mkdir(parents=True)
    (tmp_path / "org" / "secret.txt").write_text(SECRET)
    (tmp_path / "org" / "templates" / "parts" / "row.j2").write_text("<td>{{ invoice.Name }}</td>")
    return tmp_path / "org"


def run(org: Path, source: str, name: str = "t.html.j2", **options):
    (org / "templates" / name).write_text(source)
    env = make_environment(org, **options)
    try:
        return render_template(env, name, CONTEXT, seconds=options.pop("seconds", 10.0)), None
    except Exception as error:  # noqa: BLE001
        return None, describe_error(error, env, name)


@pytest.mark.parametrize("payload,kind", list(PAYLOADS.values()), ids=list(PAYLOADS))
def test_payload_refused(org, payload, kind):
    output, error = run(org, "<p>ok</p>\n" + payload + "\n")
    assert output is None, f"rendered: {output[:200]!r}"
    assert error.kind == kind, error
    assert error.file == "templates/t.html.j2" and error.line == 2, error
    assert SECRET not in error.message and "root:" not in error.message


def test_refusals_are_security_errors(org):
    (org / "templates" / "t.j2").write_text("{{ ''.__class__ }}")
    env = make_environment(org)
    with pytest.raises(TemplateRefused):
        render_template(env, "t.j2", CONTEXT)


def test_autoescape_and_allowed_features(org):
    source = (
        "{{ invoice.Title }}|{% include 'parts/row.j2' %}|"
        "{% for i in range(3) %}{{ loop.index }}{{ loop.cycle('a', 'b') }}{% endfor %}|"
        "{% set ns = namespace(total=0) %}{% for i in [1, 2, 3] %}{% set ns.total = ns.total + i %}{% endfor %}"
        "{{ ns.total }}|{{ d.year }}|{{ [3, 1, 2]|sort|join(',') }}|{{ 'ab'|upper }}|"
        "{% macro cell(x) %}<i>{{ x }}</i>{% endmacro %}{{ cell(invoice.Name) }}|{{ 'a' ~ 'b' }}"
    )
    output, error = run(org, source)
    assert error is None, error
    assert output == "&lt;b&gt;x&lt;/b&gt;|<td>INV-1</td>|1a2b3a|6|2024|1,2,3|AB|<i>INV-1</i>|ab"


def test_undefined_names_fail_with_file_and_line(org):
    output, error = run(org, "line 1\nline 2\n  {{ invoice.Nmae }}\n")
    assert output is None
    assert (error.kind, error.where) == ("undefined", "templates/t.html.j2:3")
    assert "Nmae" in error.message


def test_error_in_included_template_points_at_that_file(org):
    (org / "templates" / "parts" / "bad.j2").write_text("a\nb\n{{ nope }}")
    output, error = run(org, "x\n{% include 'parts/bad.j2' %}")
    assert (error.kind, error.where) == ("undefined", "templates/parts/bad.j2:3")


def test_syntax_error_line(org):
    output, error = run(org, "<p>\n{% if x %}\n<p>\n")  # Jinja names the line of the unclosed block
    assert error.kind == "syntax" and error.file == "templates/t.html.j2" and error.line == 2


def test_output_size_cap(org):
    output, error = run(org, "{% for i in range(10000) %}{{ 'x' * 1000 }}{% endfor %}", max_output=1_000_000)
    assert output is None and error.kind == "refused" and "larger than" in error.message


def test_time_limit(org):
    (org / "templates" / "slow.j2").write_text(
        "{% for i in range(1000) %}{% for j in range(900) %}{{ (j ~ '')|length }}{% endfor %}{% endfor %}")
    env = make_environment(org)
    with pytest.raises(TemplateRefused, match="time limit"):
        render_template(env, "slow.j2", CONTEXT, seconds=0.05)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links")
def test_symlink_out_of_templates_refused(org):
    os.symlink(org / "secret.txt", org / "templates" / "link.j2")
    output, error = run(org, "{% include 'link.j2' %}")
    assert output is None and error.kind == "refused" and "symbolic link" in error.message


def test_template_size_limit(org):
    (org / "templates" / "big.j2").write_text("x" * (300 * 1024))
    output, error = run(org, "{% include 'big.j2' %}")
    assert output is None and error.kind == "refused" and "larger than" in error.message
