"""``render`` as a service: invoices by number or run, errors with codes,
failures of single invoices as one error with a problem each."""

from __future__ import annotations

import pytest

from engine.documents.errors import InvoiceNotFound, InvoicesNotRendered, NothingToRender, TemplateFailed
from engine.documents.service import render

from config.orgcopy import REPO_ROOT, copy_org
from contexts import context

from .conftest import draft_names, load_ok


def test_render_by_number_and_run(demo_sqlite, tmp_path):
    demo = demo_sqlite
    calls = []
    out = tmp_path / "out"
    report = render(demo.engine, context(demo.model), REPO_ROOT, names=["INV-2024-00006"], run_id=1,
                    formats=("html",), out_dir=out, progress=lambda *call: calls.append(call))
    assert (report.invoices, report.rendered, report.failure_error()) == (2, 2, None)
    assert sorted(p.name for p in out.iterdir()) == ["INV-2024-00001.html", "INV-2024-00006.html"]
    assert calls == [(0, 2, ""), (1, 2, "INV-2024-00006"), (2, 2, "INV-2024-00001")]


def test_render_errors(demo_sqlite, tmp_path):
    demo = demo_sqlite
    with pytest.raises(InvoiceNotFound, match="no invoice numbered 'NOPE'") as caught:
        render(demo.engine, context(demo.model), REPO_ROOT, names=["NOPE"], formats=("html",), out_dir=tmp_path)
    assert caught.value.code == "R601" and isinstance(caught.value, LookupError)
    with pytest.raises(NothingToRender, match="invoice run '999' has no invoices"):
        render(demo.engine, context(demo.model), REPO_ROOT, run_id=999, formats=("html",), out_dir=tmp_path)


def test_failed_invoices_become_one_error(demo_sqlite, tmp_path):
    first, second = draft_names(demo_sqlite, tmp_path)
    org = copy_org(tmp_path / "org")
    template = org / "templates" / "invoice.html.j2"
    template.write_text(template.read_text(encoding="utf-8") + f"\n{{% if invoice.Name == '{second}' %}}"
                        "{{ invoice.Missing }}{% endif %}\n", encoding="utf-8")
    model = load_ok(org)
    report = render(demo_sqlite.engine, context(model), org, names=[first, second],
                    formats=("html",), out_dir=tmp_path / "out")
    assert report.rendered == 1 and [name for name, _ in report.failures] == [second]
    assert isinstance(report.errors[0], TemplateFailed)
    error = report.failure_error()
    assert isinstance(error, InvoicesNotRendered) and str(error) == "1 invoice(s) could not be rendered"
    [problem] = error.problems
    assert problem.code == "R604" and problem.where.record == second
    assert "templates/invoice.html.j2:" in problem.message
