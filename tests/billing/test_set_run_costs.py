"""What the fourth round of issue 19 changed to make the draft run cheaper,
held to giving the same results as before.

- Account records are read with the fields the runs use, not every column:
  the records and their ON copies must still carry everything the invoice
  header takes from them (``build.ACCOUNT_TO_INVOICE``, the currency, the
  copied ON fields, the formulas' inputs).
- One account cache per run (``RunSession.account_cache``), shared by its
  filters.
- Pass 1's survivors are frozen for pass 2 (``filterrun.pass_one_frozen``),
  and unfrozen after it, also when pass 2 fails.

The differential tests (``test_setbased*.py``) cover these for whole runs;
they run both paths with the same account cache, so a field both lose
would not show there: hence the direct comparisons below.
"""

from __future__ import annotations

import gc
from datetime import date

import pytest
import sqlalchemy as sa

from engine.billing.accounts import AccountCache, AccountFields
from engine.billing.build import ACCOUNT_TO_INVOICE
from engine.billing.filterrun import pass_one_frozen
from engine.billing.session import RunSession

from contexts import context

TODAY = date(2024, 6, 30)


def _all_columns(fields: AccountFields) -> set[tuple[str, ...]]:
    """Every stored account field, as the reader read them before."""
    return {(f.key,) for f in fields.obj.fields if f.is_stored} | fields.reader_paths()


def test_account_records_keep_every_field_the_runs_read(sample, monkeypatch):
    ctx = context(sample.model)
    with sample.engine.connect() as conn:
        # Every address and currency field set on some account, so a field
        # the narrow read lost would read as None here and differ.
        table = ctx.table("Account")
        ids = list(conn.execute(sa.select(table.c.id).order_by(table.c.id)).scalars())
        narrow = AccountCache(ctx, TODAY)
        narrow.load(conn, ids)
        with monkeypatch.context() as patched:
            patched.setattr(AccountFields, "record_paths", _all_columns)
            full = AccountCache(ctx, TODAY)
            full.load(conn, ids)
    keys = [source for _, source in ACCOUNT_TO_INVOICE] + ["id", "currencyisocode"]
    assert ids and len(narrow) == len(full) == len(ids)
    for account_id in ids:
        assert {k: narrow.record(account_id).get(k) for k in keys} == \
            {k: full.record(account_id).get(k) for k in keys}, account_id
        assert narrow.copies(account_id) == full.copies(account_id), account_id
    # The comparison means something: the sample accounts do carry these.
    assert any(full.record(i).get("billingcity") for i in ids)
    assert any(full.copies(i).get("region") for i in ids)
    # And the narrow read is narrower.
    assert len(AccountFields(ctx).record_paths()) < len(_all_columns(AccountFields(ctx)))


def test_a_run_shares_one_account_cache_among_its_filters(sample_model):
    ctx = context(sample_model)
    session = RunSession(sa.create_engine("sqlite://"), dry_run=False)
    first = session.account_cache(ctx, TODAY)
    assert session.account_cache(ctx, TODAY) is first
    assert session.account_cache(ctx, date(2024, 7, 1)) is not first


def test_pass_one_survivors_are_frozen_for_pass_two_only():
    assert gc.get_freeze_count() == 0
    enabled = gc.isenabled()
    kept = []
    with pass_one_frozen(lambda: kept.append([object()]) or kept) as result:
        assert result is kept
        assert gc.get_freeze_count() > 0
        assert gc.isenabled() == enabled
    assert gc.get_freeze_count() == 0
    with pytest.raises(RuntimeError):
        with pass_one_frozen(list):
            raise RuntimeError("pass 2 failed")
    assert gc.get_freeze_count() == 0
    assert gc.isenabled() == enabled
