"""What every domain uses and no domain owns: settings, the database and its transactions,
errors, authentication and tenant scoping, idempotency, pagination, the audit trail and the
event outbox, metrics, the embedded PostgreSQL and migrations. Nothing here imports a domain."""
