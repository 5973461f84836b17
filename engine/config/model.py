"""The resolved, immutable metadata model of an org.

Everything the rest of the engine knows about objects, fields and settings
comes from these frozen dataclasses. They are built once by the loader
(:mod:`engine.config.loader`) from the YAML "as written" and never change
afterwards, so they can be shared freely and hashed into the config hash that
generated records carry as provenance.

API names are case-insensitive (as in Salesforce): lookups by name go through
lower-cased indexes, while the names keep the spelling of their declaration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any, Mapping

from .diagnostics import Location


class FieldType(str, Enum):
    ID = "Id"
    TEXT = "Text"
    LONGTEXT = "LongText"
    NUMBER = "Number"
    CURRENCY = "Currency"
    PERCENT = "Percent"
    CHECKBOX = "Checkbox"
    DATE = "Date"
    DATETIME = "DateTime"
    PICKLIST = "Picklist"
    MULTIPICKLIST = "MultiPicklist"
    LOOKUP = "Lookup"
    MASTERDETAIL = "MasterDetail"
    FORMULA = "Formula"
    AUTONUMBER = "AutoNumber"
    EMAIL = "Email"
    URL = "Url"

    @property
    def is_numeric(self) -> bool:
        return self in (FieldType.NUMBER, FieldType.CURRENCY, FieldType.PERCENT)

    @property
    def is_textual(self) -> bool:
        return self in (
            FieldType.TEXT,
            FieldType.LONGTEXT,
            FieldType.EMAIL,
            FieldType.URL,
            FieldType.PICKLIST,
            FieldType.AUTONUMBER,
        )

    @property
    def is_reference(self) -> bool:
        return self in (FieldType.LOOKUP, FieldType.MASTERDETAIL)


# The types a formula may return.
FORMULA_RETURN_TYPES = (
    FieldType.TEXT,
    FieldType.NUMBER,
    FieldType.CURRENCY,
    FieldType.PERCENT,
    FieldType.CHECKBOX,
    FieldType.DATE,
    FieldType.DATETIME,
)


class ObjectKind(str, Enum):
    OBJECT = "object"
    LIST_SETTING = "list"
    HIERARCHY_SETTING = "hierarchy"


@dataclass(frozen=True, slots=True)
class FormulaDef:
    """A formula as declared; ``compiled`` is filled by the formula compiler."""

    returns: FieldType
    expression: str
    blanks_as_zero: bool = False
    compiled: object | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class FieldDef:
    name: str
    object_name: str
    type: FieldType
    label: str
    description: str = ""
    required: bool = False
    unique: bool = False
    external_id: bool = False
    default: object | None = None
    length: int | None = None
    precision: int | None = None
    scale: int | None = None
    values: tuple[str, ...] = ()
    restricted: bool = True
    reference_to: str | None = None
    relationship_name: str | None = None
    on_delete: str | None = None
    #: A lookup that is often empty and never searched for being empty: its
    #: index holds only the records that set it (docs/metadata-format.md, "Sparse lookups").
    sparse: bool = False
    formula: FormulaDef | None = None
    autonumber_format: str | None = None
    match: str | None = None
    system: bool = False
    source: Location | None = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> str:
        return self.name.lower()

    @property
    def column_name(self) -> str:
        """The database column: the API name in lower case."""
        return self.name.lower()

    @property
    def is_stored(self) -> bool:
        return self.type is not FieldType.FORMULA

    @property
    def is_custom(self) -> bool:
        return self.name.lower().endswith("__c")

    @property
    def value_type(self) -> FieldType:
        """The type of the field's value: a formula's return type, else its own."""
        if self.formula is not None:
            return self.formula.returns
        return self.type

    @property
    def path_name(self) -> str | None:
        """The name used to traverse this lookup in formulas and filters
        (``Account`` for ``Account`` or ``AccountId``, ``Project__r`` for
        ``Project__c``), or None for non-reference fields."""
        if not self.type.is_reference:
            return None
        if self.name.lower().endswith("__c"):
            return self.name[:-3] + "__r"
        if self.name.endswith("Id") and len(self.name) > 2:
            return self.name[:-2]
        return self.name


@dataclass(frozen=True, slots=True)
class ChildRelationship:
    name: str
    child_object: str
    field_name: str
    cascade: bool


@dataclass(frozen=True, slots=True)
class ObjectDef:
    name: str
    label: str
    kind: ObjectKind
    fields: tuple[FieldDef, ...]
    plural_label: str = ""
    description: str = ""
    source: Location | None = field(default=None, compare=False, repr=False)
    child_relationships: Mapping[str, ChildRelationship] = field(
        default_factory=lambda: MappingProxyType({}), compare=False, repr=False
    )
    _by_key: Mapping[str, FieldDef] = field(init=False, compare=False, repr=False)
    _by_path: Mapping[str, FieldDef] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_key", MappingProxyType({f.key: f for f in self.fields}))
        object.__setattr__(
            self,
            "_by_path",
            MappingProxyType({f.path_name.lower(): f for f in self.fields if f.path_name}),
        )

    @property
    def key(self) -> str:
        return self.name.lower()

    @property
    def table_name(self) -> str:
        return self.name.lower()

    @property
    def is_custom(self) -> bool:
        return self.name.lower().endswith("__c")

    @property
    def is_setting(self) -> bool:
        return self.kind is not ObjectKind.OBJECT

    def field(self, name: str) -> FieldDef | None:
        return self._by_key.get(name.lower())

    def has_field(self, name: str) -> bool:
        return name.lower() in self._by_key

    def relationship(self, path_name: str) -> FieldDef | None:
        """The lookup field reached by a relationship path segment."""
        return self._by_path.get(path_name.lower())

    def child_relationship(self, name: str) -> ChildRelationship | None:
        for rel_name, rel in self.child_relationships.items():
            if rel_name.lower() == name.lower():
                return rel
        return None

    @property
    def stored_fields(self) -> tuple[FieldDef, ...]:
        return tuple(f for f in self.fields if f.is_stored)


@dataclass(frozen=True, slots=True)
class SettingRecord:
    """One row of a custom setting: typed values keyed by lower-case field name."""

    setting: str
    name: str
    values: Mapping[str, object]
    source: Location | None = field(default=None, compare=False, repr=False)
    value_sources: Mapping[str, Location] = field(
        default_factory=lambda: MappingProxyType({}), compare=False, repr=False
    )

    def get(self, field_name: str, default: object = None) -> object:
        value = self.values.get(field_name.lower())
        return default if value is None else value

    def where(self, field_name: str) -> Location | None:
        return self.value_sources.get(field_name.lower(), self.source)


@dataclass(frozen=True, slots=True)
class TemplateFile:
    name: str
    path: str


@dataclass(frozen=True, slots=True)
class OrgModel:
    """The whole resolved org: objects (including setting structures), setting
    records, template files and a hash over all of it."""

    root: str
    objects: Mapping[str, ObjectDef]
    records: Mapping[str, tuple[SettingRecord, ...]]
    templates: Mapping[str, TemplateFile]
    config_hash: str
    #: Parsed YAML documents a domain owns (``loader.EXTENSION_FILES``), by path.
    extensions: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def object(self, name: str) -> ObjectDef | None:
        return self.objects.get(name.lower())

    def require(self, name: str) -> ObjectDef:
        found = self.object(name)
        if found is None:
            raise KeyError(f"object {name!r} is not defined in the org metadata")
        return found

    @property
    def data_objects(self) -> tuple[ObjectDef, ...]:
        return tuple(o for o in self.objects.values() if o.kind is ObjectKind.OBJECT)

    def setting_records(self, setting: str) -> tuple[SettingRecord, ...]:
        return self.records.get(setting.lower(), ())

    def setting_record(self, setting: str, name: str) -> SettingRecord | None:
        for record in self.setting_records(setting):
            if record.name.lower() == name.lower():
                return record
        return None

    def hierarchy_default(self, setting: str) -> SettingRecord | None:
        """The org-default row of a hierarchy setting (e.g. GlobalSettings)."""
        records = self.setting_records(setting)
        return records[0] if records else None
