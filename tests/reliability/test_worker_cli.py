"""``metabill worker --run`` and the queue figures of ``metabill runs``
(issue 19): a parallel run shows its chunks done/total, and a worker cannot
join a run without an open work queue."""

from __future__ import annotations

import json
from decimal import Decimal

from click.testing import CliRunner

from .support import ACCOUNTS


def _invoke(*args):
    from engine.cli.main import cli

    return CliRunner().invoke(cli, list(args))


def test_runs_shows_the_queue_of_a_parallel_run_and_a_worker_finds_nothing_to_join(world, reliability_org):
    for n in range(3):
        for account in ACCOUNTS:
            world.add_usage(account, Decimal(1), Decimal("2.50") + n, f"{account} u{n}")
    common = ("--org", str(reliability_org), "--db", world.url)
    result = _invoke("invoice-run", "--filter", "Usage", "--period-start", "2024-01-01", "--period-end",
                     "2024-12-31", "--workers", "2", "--batch-size", "2", *common)
    assert result.exit_code == 0, result.output

    result = _invoke("--json", "runs", *common)
    assert result.exit_code == 0, result.output
    run = json.loads(result.output)["result"]["runs"][0]
    queue = run["queue"]
    # 2 workers × 1 chunk per pass: 2 pass 1 and 2 pass 2 chunks, all done
    assert (run["status"], queue["done"], queue["total"], queue["failed"]) == ("Completed", 4, 4, 0)
    assert queue["lines"] == 3 * len(ACCOUNTS) and queue["eta_seconds"] == 0.0

    result = _invoke("runs", *common)
    assert result.exit_code == 0 and "4/4" in result.output, result.output

    result = _invoke("worker", "--run", run["name"], *common)  # its round was closed with the run
    assert result.exit_code == 1 and "R251" in result.output, result.output
    result = _invoke("worker", "--run", "IR-999999", *common)
    assert result.exit_code == 1 and "R210" in result.output, result.output
