"""Benchmark: load and validate a large generated org.

Builds a copy of the sample org enlarged to about 100 objects, 1,000 fields and
1,000 G/L account rules, then times ``load_project`` (read, schema, resolve,
formulas, records, checks) over several repetitions and prints one JSON line.
Goal (perf-reliability A5): <= 1 s.

    python -m bench.load_config [--objects 100] [--fields 1000] [--rules 1000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from engine.project import load_project
from engine.config.resolve import IMPLICIT_FIELDS

ROOT = Path(__file__).resolve().parent.parent
TYPES = (
    "    {name}: {{type: Text, length: 80}}\n",
    "    {name}: {{type: Currency, precision: 16, scale: 2}}\n",
    "    {name}: {{type: Date}}\n",
    "    {name}: {{type: Checkbox}}\n",
    "    {name}: {{type: Picklist, values: [A, B, C]}}\n",
    "    {name}: {{type: Number, precision: 18, scale: 4}}\n",
    "    {name}: {{type: Formula, returns: Number, expression: \"IF(ISBLANK(F1__c), 0, 1) * 2\"}}\n",
)


def build_org(target: Path, objects: int, fields: int, rules: int) -> dict:
    for folder in ("metadata", "custom_settings", "templates"):
        shutil.copytree(ROOT / folder, target / folder)
    shutil.copy(ROOT / "metabill.yaml", target / "metabill.yaml")
    base = load_project(target).model
    existing = len(base.objects)
    declared = sum(1 for o in base.objects.values() for f in o.fields if f.name not in IMPLICIT_FIELDS)
    extra_objects = max(objects - existing, 1)
    per_object = max(-(-(fields - declared) // extra_objects), 2)
    for i in range(extra_objects):
        lines = [
            "version: 1\n",
            f"object: Bench{i:03d}__c\n",
            f"label: Bench {i}\n",
            "name_field: {type: Text, length: 80}\n",
            "fields:\n",
            "    F1__c: {type: Text, length: 80}\n",
            "    Account__c: {type: Lookup, to: Account, relationship_name: Bench%03d__r}\n" % i,
        ]
        for j in range(2, per_object):
            lines.append(TYPES[j % len(TYPES)].format(name=f"F{j}__c"))
        (target / "metadata" / "objects" / f"Bench{i:03d}__c.yaml").write_text("".join(lines))
    records = ["version: 1\n", "setting: GlAccountRule\n", "records:\n"]
    for i in range(rules):
        records.append(
            f"  - Name: Bench rule {i:04d}\n"
            f"    GLAccount: \"{8000 + i}\"\n"
            f"    ProductGroup: \"PG{i:04d}\"\n"
        )
    (target / "custom_settings" / "GlAccountRule_bench.yaml").write_text("".join(records))
    return {"objects": existing + extra_objects, "fields_per_extra_object": per_object}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=100)
    parser.add_argument("--fields", type=int, default=1000)
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        org = Path(tmp)
        shape = build_org(org, args.objects, args.fields, args.rules)
        timings = []
        result = None
        for _ in range(args.repeat):
            start = time.perf_counter()
            result = load_project(org)
            timings.append(time.perf_counter() - start)
        model = result.model
        field_count = sum(1 for o in model.objects.values() for f in o.fields if f.name not in IMPLICIT_FIELDS)
        rule_count = len(model.setting_records("GlAccountRule"))
        print(
            json.dumps(
                {
                    "benchmark": "load_config",
                    "objects": len(model.objects),
                    "declared_fields": field_count,
                    "gl_rules": rule_count,
                    "files": result.files_checked,
                    "errors": len(result.errors),
                    "warnings": len(result.diagnostics) - len(result.errors),
                    "seconds_median": round(statistics.median(timings), 3),
                    "seconds_min": round(min(timings), 3),
                    "goal_seconds": 1.0,
                    **shape,
                }
            )
        )


if __name__ == "__main__":
    main()
