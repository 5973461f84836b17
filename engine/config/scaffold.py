"""A new org in one step: ``metabill init DIR``.

A new org needs every product object and setting definition the engine
relies on, exactly as the engine ships them, and nothing of the sample
company. Both are taken from the sample org shipped with the engine (the
folder holding ``metabill.yaml`` next to the ``engine`` package), so the new
org can never lag behind the product contract:

* ``metabill.yaml``: a manifest named after the folder;
* ``metadata/objects``: the product objects (customer objects such as
  ``Partial_Delivery__c`` left out); the source objects (Order, Opportunity
  and their items) without the sample's customer fields, which only its
  filters read;
* ``metadata/settings``: every setting definition, unchanged;
* ``custom_settings``: the settings that make invoices and bookings work
  (Global Settings, counters, booking texts, tax and account rules, the
  invoice template, installment plans), a business entity to fill in, no
  filters and no job schedules but a commented example of each (both name
  the sample's own records), no export settings;
* ``templates``: the invoice template.

``from_sample=True`` copies the sample org itself instead (with ``data/``).
Nothing is written into a folder that already holds an org, and files are
written to a staging folder first and moved into place together, so an
interrupted init leaves no half org.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import yaml

from . import contract

#: The sample org: the folder holding the ``engine`` package, when it is an org.
SAMPLE_ORG = Path(__file__).resolve().parents[2]
#: Objects whose records come from the customer's systems: the sample's
#: customer fields on them serve only its own filters.
SOURCE_OBJECTS = ("Order", "OrderItem", "Opportunity", "OpportunityLineItem")
#: Settings copied from the sample as they are.
COPIED_SETTINGS = ("GlobalSettings", "Counter", "BookingText", "TaxRule", "GlAccountRule", "CollectiveAccount",
                   "CenterRule", "Template", "InstallmentPlan")
ORG_PARTS = ("metabill.yaml", "metadata", "custom_settings", "templates")

_FILTER_EXAMPLE = """\
version: 1
setting: Filter
# Invoice-run filters: which source records become invoices. An example (remove
# the comment marks and add the ON_ controlling fields to Order and OrderItem,
# see docs/metadata-format.md), then run 'metabill validate-config':
#
# records:
#   - Name: Order Invoice
#     Target: Order
#     ChildRelation: OrderItems
#     UseCase: Generic
#     Sequence: 10
#     Condition: "Status = 'Activated'"
records: []
"""

_JOB_SCHEDULES = """\
version: 1
setting: JobSchedule
# Jobs the scheduler runs ('metabill jobs tick' every few minutes). An example:
#
# records:
#   - Name: Nightly balance assignment
#     Job: AssignBalancesChain
#     Cron: "0 2 * * *"
#     TimeZone: Europe/Berlin
#     Active: true
records: []
"""

_BUSINESS_ENTITY = """\
version: 1
setting: BusinessEntity
# The company that issues the invoices: replace the placeholders by its data
# (its invoices and e-invoices print them). IBAN, BIC and SEPACreditorId are
# checked when given; the SEPA exports need them.
records:
  - Name: MAIN
    Company: Your Company
    Street: Your Street 1
    PostalCode: "00000"
    City: Your City
    CountryCode: DE
    Email: billing@example.com
    Phone: +49 000 0000000
    Default: true
"""


class InitError(Exception):
    """The org cannot be created where asked (the CLI reports it as a user error)."""


def sample_org() -> Path:
    """The sample org shipped with the engine; InitError when this
    installation does not include it."""
    if not (SAMPLE_ORG / "metabill.yaml").is_file() or not (SAMPLE_ORG / "metadata" / "objects").is_dir():
        raise InitError(f"the sample org is not part of this installation (looked in {SAMPLE_ORG}); "
                        "install metabill from its source folder (pip install -e .)")
    return SAMPLE_ORG


def create_org(target: Path, *, from_sample: bool = False) -> list[str]:
    """Create a new org in ``target`` (created when missing, else it must be
    empty of org files); returns the files written, relative to ``target``."""
    source = sample_org()
    taken = [part for part in ORG_PARTS if (target / part).exists()]
    if taken:
        raise InitError(f"{target} already holds {', '.join(taken)}: choose an empty or new folder")
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".metabill-init-", dir=target))
    try:
        if from_sample:
            for part in ORG_PARTS + ("data",):
                if (source / part).is_dir():
                    shutil.copytree(source / part, staging / part)
                elif (source / part).is_file():
                    shutil.copy2(source / part, staging / part)
        else:
            _write_minimal(source, staging, target.resolve().name or "New org")
        written = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
        for entry in sorted(staging.iterdir()):
            os.replace(entry, target / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written


def _write_minimal(source: Path, out: Path, name: str) -> None:
    manifest = {"version": 1, "org": name[:120], "default_currency": "EUR", "locale": "de_DE",
                "description": "Created with 'metabill init'."}
    (out / "metabill.yaml").write_text(_dump(manifest), encoding="utf-8")
    objects = out / "metadata" / "objects"
    objects.mkdir(parents=True)
    for path in sorted((source / "metadata" / "objects").glob("*.yaml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        object_name = str(document.get("object", ""))
        if contract.product_fields(object_name) is None:
            continue  # a customer object of the sample
        if object_name in SOURCE_OBJECTS:
            fields = document.get("fields") or {}
            document["fields"] = {key: value for key, value in fields.items() if not key.endswith("__c")}
            document.pop("description", None)  # it describes the sample's billing of them
            (objects / path.name).write_text(_dump(document), encoding="utf-8")
        else:
            shutil.copy2(path, objects / path.name)
    shutil.copytree(source / "metadata" / "settings", out / "metadata" / "settings")
    records = out / "custom_settings"
    records.mkdir()
    for setting in COPIED_SETTINGS:
        path = source / "custom_settings" / f"{setting}.yaml"
        if path.is_file():
            shutil.copy2(path, records / path.name)
    (records / "Filter.yaml").write_text(_FILTER_EXAMPLE, encoding="utf-8")
    (records / "BusinessEntity.yaml").write_text(_BUSINESS_ENTITY, encoding="utf-8")
    (records / "JobSchedule.yaml").write_text(_JOB_SCHEDULES, encoding="utf-8")
    shutil.copytree(source / "templates", out / "templates")


def _dump(document: dict) -> str:
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=110, default_flow_style=False)
