"""Billing: invoice runs (set-based), invoices with their payments and credit notes, gapless
numbering, money arithmetic, the accounting export and the revenue report."""
