"""The org-wide switches of Global Settings, typed, with their defaults.

``GlobalSettings`` is a hierarchy setting whose default row any layer may
need: billing reads the rounding mode and the default currency, booking
whether to book at all, cash the write-off and overpayment policy and the
cash-management integration. They are read here once per command, typed, with
the value that applies when the row or the field is empty; every other module
asks :class:`GlobalSettings`, never the raw record.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation

from engine.config.model import OrgModel, SettingRecord


def _flag(record: SettingRecord | None, name: str) -> bool:
    return bool(record is not None and record.get(name))


def _text(record: SettingRecord | None, name: str) -> str | None:
    value = record.get(name) if record is not None else None
    text = str(value).strip() if value is not None else ""
    return text or None


def _number(record: SettingRecord | None, name: str) -> Decimal | None:
    value = record.get(name) if record is not None else None
    if value in (None, ""):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


@dataclass(frozen=True)
class GlobalSettings:
    """The default row of Global Settings as typed values.

    Empty means: booleans off; RoundingMode ``PerLine``; DefaultCurrency
    ``EUR``; AccountExternalIdField ``AccountNumber``; numbers unset (None).
    """

    allow_overpayments: bool = False
    allow_invoice_changes: bool = False
    adjust_tax_rounding: bool = False
    rounding_mode: str = "PerLine"
    create_bookkeeping_data: bool = False
    create_bookkeeping_data_for_deposit: bool = False
    accounting_in_gross_values: bool = False
    separate_contra_account_booking_details: bool = False
    payment_booking_data: bool = False
    write_off_threshold_percent: Decimal | None = None
    write_off_cap_amount: Decimal | None = None
    finalization_write_off_amount: Decimal | None = None
    write_off_currency: str | None = None
    statute_of_limitations_years: Decimal | None = None
    cash_management_integration: bool = False
    default_currency: str = "EUR"
    account_external_id_field: str = "AccountNumber"
    payment_matching_threshold: Decimal = Decimal(100)
    payment_lead_days: int = 1
    #: A returned collection's bank fee is charged to the customer (issue 18).
    charge_return_fees: bool = False
    #: The row itself, for custom fields an org adds.
    record: SettingRecord | None = None

    @classmethod
    def of(cls, model: OrgModel) -> "GlobalSettings":
        row = model.hierarchy_default("GlobalSettings")
        return cls(
            allow_overpayments=_flag(row, "AllowOverpayments"),
            allow_invoice_changes=_flag(row, "AllowInvoiceChanges"),
            adjust_tax_rounding=_flag(row, "AdjustTaxRounding"),
            rounding_mode=str((row.get("RoundingMode") if row is not None else None) or "PerLine"),
            create_bookkeeping_data=_flag(row, "CreateBookkeepingData"),
            create_bookkeeping_data_for_deposit=_flag(row, "CreateBookkeepingDataForDeposit"),
            accounting_in_gross_values=_flag(row, "EnableAccountingInGrossValues"),
            separate_contra_account_booking_details=_flag(row, "SeparateContraAccountBookingDetails"),
            payment_booking_data=_flag(row, "EnablePaymentBookingData"),
            write_off_threshold_percent=_number(row, "WriteOffThresholdPercent"),
            write_off_cap_amount=_number(row, "WriteOffCapAmount"),
            finalization_write_off_amount=_number(row, "FinalizationWriteOffAmount"),
            write_off_currency=_text(row, "WriteOffCurrency"),
            statute_of_limitations_years=_number(row, "StatuteOfLimitationsYears"),
            cash_management_integration=_flag(row, "EnableCashManagementIntegration"),
            default_currency=str((row.get("DefaultCurrency") if row is not None else None) or "EUR"),
            account_external_id_field=str((row.get("AccountExternalIdField") if row is not None else None)
                                          or "AccountNumber"),
            payment_matching_threshold=_number(row, "PaymentMatchingThreshold") or Decimal(100),
            payment_lead_days=int(_number(row, "PaymentLeadDays") if _number(row, "PaymentLeadDays") is not None
                                  else 1),
            charge_return_fees=_flag(row, "ChargeReturnFees"),
            record=row,
        )

    @property
    def payment_bookings(self) -> bool:
        """Payment-type balances get booking details: both switches on."""
        return self.create_bookkeeping_data and self.payment_booking_data

    def with_cash_management(self, enabled: bool = True) -> "GlobalSettings":
        """These settings with the cash-management integration switched
        (``fix-invoices --enable-integration`` prepares data before the switch)."""
        return replace(self, cash_management_integration=enabled)
