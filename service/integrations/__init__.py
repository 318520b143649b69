"""Integrations with outside systems: Stripe (pushing invoices, receiving its webhooks) and
outbound webhooks (endpoints, signed delivery, the SSRF guard). Events reach them through the
outbox in service.core, written with each change.

Nothing here calls out while a database transaction holds locks: a push reads what it needs in
one short transaction, calls out with no transaction open, and records the result in another.
"""
