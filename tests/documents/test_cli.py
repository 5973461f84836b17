"""``metabill render``: files per invoice, --run, formats, errors for people
(no tracebacks), deterministic output."""

from __future__ import annotations

import io

from click.testing import CliRunner
from pypdf import PdfReader

from engine.cli.main import cli
from engine.documents import pdf as pdf_module

from config.orgcopy import REPO_ROOT, copy_org

from .conftest import draft_names, parse, row_texts


def invoke(*args: str):
    runner = CliRunner(env={"METABILL_DB_URL": None, "COLUMNS": "200"})
    return runner.invoke(cli, ["render", *args], catch_exceptions=False)


def test_render_html_and_pdf(demo, tmp_path):
    out = tmp_path / "invoices"
    result = invoke("INV-2024-00006", "INV-2024-00010", "--format", "html", "--format", "pdf", "--out", str(out),
                    "--org", str(REPO_ROOT), "--db", demo.url)
    assert result.exit_code == 0, result.output
    assert "Rendered 2 invoice(s)" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["INV-2024-00006.html", "INV-2024-00006.pdf",
                                                    "INV-2024-00010.html", "INV-2024-00010.pdf"]
    tree = parse((out / "INV-2024-00010.html").read_text(encoding="utf-8"))
    assert row_texts(tree, "grand-total") == [["Gesamtbetrag", "14.280,00"]]
    reader = PdfReader(io.BytesIO((out / "INV-2024-00006.pdf").read_bytes()))
    assert "Payment Amount" in reader.pages[0].extract_text()


def test_render_run_is_deterministic(demo_sqlite, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        result = invoke("--run", "IR-000001", "--out", str(out), "--org", str(REPO_ROOT), "--db", demo_sqlite.url)
        assert result.exit_code == 0, result.output
    names = sorted(p.name for p in first.iterdir())
    assert names == ["INV-2024-00001.pdf"]
    assert all((first / n).read_bytes() == (second / n).read_bytes() for n in names)


def test_render_user_errors(demo_sqlite, tmp_path):
    db = ("--org", str(REPO_ROOT), "--db", demo_sqlite.url, "--out", str(tmp_path / "o"))
    result = invoke("INV-2024-00006", "NOPE", *db)
    assert result.exit_code == 1 and "no invoice numbered 'NOPE'" in result.output
    result = invoke(*db)
    assert result.exit_code == 2 and "give invoice numbers or --run" in result.output
    result = invoke("--run", "IR-999999", *db)
    assert result.exit_code == 1 and "no invoice run 'IR-999999'" in result.output


def test_render_template_error_on_real_data(demo_sqlite, tmp_path):
    """A template that passes validate-config's sample but fails on one real
    invoice (a draft: issued invoices return their stored document): that
    invoice is reported with file:line, the others are written."""
    first, second = draft_names(demo_sqlite, tmp_path)
    org = copy_org(tmp_path / "org")
    template = org / "templates" / "invoice.html.j2"
    template.write_text(template.read_text(encoding="utf-8") + f"\n{{% if invoice.Name == '{second}' %}}"
                        "{{ invoice.Missing }}{% endif %}\n", encoding="utf-8")
    line = template.read_text(encoding="utf-8").count("\n")
    out = tmp_path / "out"
    result = invoke(first, second, "--format", "html", "--out", str(out), "--org", str(org),
                    "--db", demo_sqlite.url)
    assert result.exit_code == 4  # one of the two was rendered: partly done
    assert (f"invoice {second}: template 'Default Invoice (EN)' failed at templates/invoice.html.j2:{line}: "
            in " ".join(result.output.split()).replace(f"invoice.html.j2: {line}", f"invoice.html.j2:{line}"))
    assert "Traceback" not in result.output
    assert sorted(p.name for p in out.iterdir()) == [f"{first}.html"]


def test_render_pdf_without_system_libraries(demo_sqlite, tmp_path, monkeypatch):
    def broken():
        raise OSError("cannot load library 'libpango-1.0-0': libpango-1.0-0: cannot open shared object file")

    monkeypatch.setattr(pdf_module, "_import_weasyprint", broken)
    result = invoke("INV-2024-00006", "--out", str(tmp_path / "o"), "--org", str(REPO_ROOT), "--db",
                    demo_sqlite.url)
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "WeasyPrint, which cannot load libpango-1.0-0" in text and "apt-get install" in text
    assert "Traceback" not in result.output
    # HTML needs no system library
    result = invoke("INV-2024-00006", "--format", "html", "--out", str(tmp_path / "o"), "--org", str(REPO_ROOT),
                    "--db", demo_sqlite.url)
    assert result.exit_code == 0, result.output
