"""Small metadata models for the storage tests, built directly from the model
dataclasses (independent of the YAML loader)."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

from engine.config.model import FieldDef, FieldType, FormulaDef, ObjectDef, ObjectKind, OrgModel

T = FieldType


def fld(obj: str, name: str, type_: FieldType, **kw) -> FieldDef:
    return FieldDef(name=name, object_name=obj, type=type_, label=kw.pop("label", name), **kw)


def account() -> ObjectDef:
    return ObjectDef(
        name="Account",
        label="Account",
        kind=ObjectKind.OBJECT,
        fields=(
            fld("Account", "Name", T.TEXT, length=80, required=True),
            fld("Account", "AccountNumber", T.TEXT, length=40, external_id=True),
            fld("Account", "Industry", T.PICKLIST, values=("Energy", "Retail", "Media")),
            fld("Account", "ParentId", T.LOOKUP, reference_to="Account"),
            fld("Account", "CreditLimit", T.CURRENCY, precision=18, scale=2),
            fld("Account", "Active", T.CHECKBOX, default=True),
            fld("Account", "Email", T.EMAIL, length=80),
        ),
    )


def invoice() -> ObjectDef:
    return ObjectDef(
        name="Invoice",
        label="Invoice",
        kind=ObjectKind.OBJECT,
        fields=(
            fld("Invoice", "Name", T.AUTONUMBER, autonumber_format="INV-{000000}"),
            fld("Invoice", "Account", T.LOOKUP, reference_to="Account", required=True),
            fld("Invoice", "GrandTotal", T.CURRENCY, precision=16, scale=2),
            fld("Invoice", "TaxRate", T.PERCENT, precision=5, scale=2),
            fld("Invoice", "InvoiceDate", T.DATE),
            fld("Invoice", "PostedAt", T.DATETIME),
            fld("Invoice", "Paid", T.CHECKBOX),
            fld("Invoice", "Status", T.PICKLIST, values=("Draft", "Posted"), default="Draft"),
            fld("Invoice", "Tags", T.MULTIPICKLIST, values=("A", "B", "C")),
            fld("Invoice", "Notes", T.LONGTEXT),
            fld(
                "Invoice",
                "GrossTotal",
                T.FORMULA,
                formula=FormulaDef(returns=T.CURRENCY, expression="GrandTotal * (1 + TaxRate)"),
            ),
        ),
    )


def line_item() -> ObjectDef:
    return ObjectDef(
        name="InvoiceLineItem",
        label="Invoice Line Item",
        kind=ObjectKind.OBJECT,
        fields=(
            fld("InvoiceLineItem", "Name", T.TEXT, length=80),
            fld("InvoiceLineItem", "Invoice", T.MASTERDETAIL, reference_to="Invoice", required=True),
            fld("InvoiceLineItem", "Quantity", T.NUMBER, precision=18, scale=4),
            fld("InvoiceLineItem", "Amount", T.CURRENCY, precision=16, scale=2),
        ),
    )


def billing_settings() -> ObjectDef:
    return ObjectDef(
        name="BillingSettings",
        label="Billing Settings",
        kind=ObjectKind.HIERARCHY_SETTING,
        fields=(fld("BillingSettings", "Currency", T.TEXT, length=3),),
    )


def make_model(*objects: ObjectDef) -> OrgModel:
    return OrgModel(
        root="tests",
        objects=MappingProxyType({o.key: o for o in objects}),
        records=MappingProxyType({}),
        templates=MappingProxyType({}),
        config_hash="test",
    )


def billing_model() -> OrgModel:
    return make_model(account(), invoice(), line_item(), billing_settings())


def _with_fields(model: OrgModel, object_name: str, fields: tuple[FieldDef, ...]) -> OrgModel:
    obj = model.require(object_name)
    changed = dataclasses.replace(obj, fields=fields)
    return make_model(*(changed if o.key == obj.key else o for o in model.objects.values()))


def add_field(model: OrgModel, object_name: str, field: FieldDef) -> OrgModel:
    return _with_fields(model, object_name, model.require(object_name).fields + (field,))


def drop_field(model: OrgModel, object_name: str, field_name: str) -> OrgModel:
    obj = model.require(object_name)
    return _with_fields(model, object_name, tuple(f for f in obj.fields if f.key != field_name.lower()))


def change_field(model: OrgModel, object_name: str, field_name: str, **changes) -> OrgModel:
    obj = model.require(object_name)
    fields = tuple(dataclasses.replace(f, **changes) if f.key == field_name.lower() else f for f in obj.fields)
    return _with_fields(model, object_name, fields)


def drop_object(model: OrgModel, object_name: str) -> OrgModel:
    return make_model(*(o for o in model.objects.values() if o.key != object_name.lower()))
