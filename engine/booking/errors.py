"""The failures of finalization, booking, cancellation and explain (R300-R399).

Each is an :class:`~engine.domain.errors.EngineError` with a stable code: a
user can act on it (a draft that is not one, a missing collective account or
debtor, a counter without a digit mask, an invoice that cannot be cancelled).
They keep ``ValueError`` as a second base, since callers have caught them as
such. A broken booking invariant is not among them: that is a bug of the
engine (:class:`engine.booking.postings.BookingInvariantError`).

The modules that raise them re-export them (``engine.booking.finalize.FinalizeError``,
``engine.booking.cancel.CancelError``, ...), so callers import them from there.
"""

from __future__ import annotations

from engine.domain.errors import EngineError, Where


def invoice_where(name: object) -> Where:
    """What a failure about an invoice concerns: the invoice by name (a draft's
    name, a final number, or its id when nothing else is known)."""
    return Where(object="Invoice", record=str(name)) if name not in (None, "") else Where(object="Invoice")


class FinalizeError(EngineError, ValueError):
    """An invoice cannot be finalized and stays a draft.

    Its number is not drawn, so the numbers of the others stay gapless.
    """

    code = "R301"


class StageError(FinalizeError):
    """A later stage of finalization refused an invoice; it stays a draft.

    The stages are the finalization write-off and the cash-management
    entries; the batch is rolled back and finalized again without the
    invoice.
    """

    code = "R302"

    def __init__(self, invoice_id: int, message: str):
        super().__init__(message, where=invoice_where(invoice_id))
        self.invoice_id = invoice_id


class BookingError(EngineError, ValueError):
    """No account for a booking, or no debtor: the invoice or balance cannot be booked."""

    code = "R303"


class CancelError(EngineError, ValueError):
    """An invoice cannot be cancelled.

    It does not exist, is not Open or Paid, is itself a cancellation or has
    one already, or its cancellation draft could not be finalized.
    """

    code = "R304"


class ExplainError(EngineError, ValueError):
    """There is nothing to explain: no such invoice, or it has no booking details."""

    code = "R305"


class BalanceError(EngineError, ValueError):
    """A balance cannot be created or booked."""

    code = "R306"


class PeriodError(EngineError, ValueError):
    """No open booking period was found for a booking date.

    The period of the date and every following month up to
    ``write.MAX_PERIOD_HOPS`` are closed.
    """

    code = "R307"
