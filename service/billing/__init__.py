"""Billing: invoice runs, invoices and their money, numbering, exports."""
