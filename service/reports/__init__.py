"""Reports for the provider, read-only aggregates."""
