"""Billing: invoice runs and what they need (filter conditions, rules, money)."""
