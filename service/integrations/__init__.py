"""Integrations with outside systems: Stripe (pushing invoices, receiving its webhooks).

Nothing here calls out while a database transaction holds locks: a push reads what it needs in
one short transaction, calls Stripe with no transaction open, and records the result in another.
"""
