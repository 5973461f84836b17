"""Benchmark: evaluations per second of a realistic, compiled formula.

Compiles one order-line formula (picklist test, arithmetic with a Percent
field, BLANKVALUE, ROUND) against a small in-memory model and evaluates it on
a handful of varied records for about a second, then prints one JSON line.
Goal: >= 30,000 evaluations per second.

    python -m bench.formula [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import json
import time
from decimal import Decimal

from engine.config.formula import FormulaCompiler
from engine.config.model import FieldDef, FieldType, ObjectDef, ObjectKind

EXPRESSION = (
    "IF(AND(ISPICKVAL(Status, 'Active'), Quantity > 0), "
    "ROUND(Quantity * UnitPrice * (1 - BLANKVALUE(Discount__c, 0)), 2), 0)"
)


def _order() -> ObjectDef:
    def field(name: str, kind: FieldType, **extra: object) -> FieldDef:
        return FieldDef(name=name, object_name="Order", type=kind, label=name, **extra)  # type: ignore[arg-type]

    return ObjectDef(
        name="Order",
        label="Order",
        kind=ObjectKind.OBJECT,
        fields=(
            field("Quantity", FieldType.NUMBER, precision=18, scale=2),
            field("UnitPrice", FieldType.CURRENCY, precision=16, scale=2),
            field("Discount__c", FieldType.PERCENT, precision=5, scale=2),
            field("Status", FieldType.PICKLIST, values=("Draft", "Active")),
        ),
    )


RECORDS = [
    {"quantity": Decimal("2.00"), "unitprice": Decimal("9.95"), "discount__c": Decimal("10.00"), "status": "Active"},
    {"quantity": Decimal("1.00"), "unitprice": Decimal("120.00"), "discount__c": None, "status": "Active"},
    {"quantity": Decimal("0.00"), "unitprice": Decimal("5.00"), "status": "Active"},
    {"quantity": Decimal("3.50"), "unitprice": Decimal("19.99"), "discount__c": Decimal("2.50"), "status": "Draft"},
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    order = _order()
    compiled, problems = FormulaCompiler(lambda name: order if name.lower() == "order" else None).compile_expression(
        order, EXPRESSION, FieldType.CURRENCY
    )
    if compiled is None:
        raise SystemExit(f"benchmark formula does not compile: {problems}")
    evaluate = compiled.evaluate
    count = 0
    start = time.perf_counter()
    deadline = start + args.seconds
    while time.perf_counter() < deadline:
        for _ in range(250):
            for record in RECORDS:
                evaluate(record)
        count += 250 * len(RECORDS)
    elapsed = time.perf_counter() - start
    print(json.dumps({
        "benchmark": "formula",
        "expression": EXPRESSION,
        "evaluations": count,
        "seconds": round(elapsed, 3),
        "evaluations_per_second": round(count / elapsed),
        "goal_evaluations_per_second": 30_000,
    }))


if __name__ == "__main__":
    main()
