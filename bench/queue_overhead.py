"""Per-chunk overhead of the invoice run's work queue (engine.billing.workqueue).

Enqueues ``--chunks`` no-op chunks in one round, then one process reaps,
claims (``FOR UPDATE SKIP LOCKED`` on PostgreSQL) and finishes them one by
one, as a worker does; prints one JSON line with milliseconds per chunk and
the load average. Compare with a job-queue library's defer + fetch + finish
of as many no-op jobs (docs/decisions.md, issue 19).

    python -m bench.queue_overhead --chunks 2000 --db-url postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import json
import os
import time

import sqlalchemy as sa


def main() -> None:
    from engine.billing.workqueue import ChunkResult, ChunkSpec, QueueSettings, WorkQueue, create_round
    from engine.storage.schema import WORK_CHUNK, WORK_KEYS, WORK_ROUND

    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--db-url", default="sqlite:////tmp/metabill_queue_bench.db")
    args = parser.parse_args()
    engine = sa.create_engine(args.db_url)
    with engine.begin() as conn:
        for table in (WORK_KEYS, WORK_CHUNK, WORK_ROUND):
            table.drop(conn, checkfirst=True)
    load_before = os.getloadavg()
    started = time.perf_counter()
    number = create_round(engine, 1, "{}", "bench", [ChunkSpec(0, i, "bench", "bill", args.chunks)
                                                     for i in range(args.chunks)])
    enqueue = time.perf_counter() - started
    queue = WorkQueue(engine, 1, number, settings=QueueSettings(lease_seconds=600))
    started = time.perf_counter()
    done = 0
    while True:
        chunk = queue.claim()
        if chunk is None:
            break
        queue.finish(chunk, ChunkResult())
        done += 1
    work = time.perf_counter() - started
    print(json.dumps({"tool": "metabill work queue", "dialect": engine.dialect.name, "chunks": args.chunks,
                      "done": done, "enqueue_ms_per_chunk": round(enqueue / args.chunks * 1000, 3),
                      "reap_claim_plus_finish_ms_per_chunk": round(work / max(done, 1) * 1000, 3),
                      "load_before": load_before, "load_after": os.getloadavg()}))
    engine.dispose()


if __name__ == "__main__":
    main()
