"""Billing: invoice runs (source records to draft invoices), the filter condition language, draft deletion and the checks of what the run interprets; see README.md."""
