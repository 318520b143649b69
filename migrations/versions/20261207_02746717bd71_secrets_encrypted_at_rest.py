"""secrets encrypted at rest: webhook signing secrets, idempotency keys and replays

Webhook signing secrets are encrypted with ENSEMBLE_SECRET_KEY (service/core/encryption.py).
Idempotency keys are kept only as a hash of caller and key; stored responses are encrypted
under a key derived from the Idempotency-Key itself (service/core/idempotency.py). Existing
rows are converted here, with the keys of the settings this migration runs under.

Revision ID: 02746717bd71
Revises: 4740c2dd5bcb
Create Date: 2026-12-07 09:45:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from service.core import encryption, idempotency
from service.core.settings import Settings
from service.integrations import webhook_endpoints

revision: str = "02746717bd71"
down_revision: str | None = "4740c2dd5bcb"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    keyring = encryption.keyring(Settings())
    bind = op.get_bind()

    op.alter_column("webhook_endpoints", "secret", type_=sa.String(length=500))
    op.alter_column("webhook_endpoints", "previous_secret", type_=sa.String(length=500))
    endpoints = bind.execute(
        sa.text("SELECT id, secret, previous_secret FROM webhook_endpoints")
    ).all()
    for row in endpoints:
        bind.execute(
            sa.text(
                "UPDATE webhook_endpoints SET secret = :secret, previous_secret = :previous "
                "WHERE id = :id"
            ),
            {
                "id": row.id,
                "secret": webhook_endpoints.seal_secret(keyring, row.id, row.secret),
                "previous": (
                    webhook_endpoints.seal_secret(keyring, row.id, row.previous_secret)
                    if row.previous_secret is not None
                    else None
                ),
            },
        )

    # The raw key is still here to derive each response's key from; after this, only its hash.
    op.add_column("idempotency_keys", sa.Column("key_hash", sa.String(length=64), nullable=True))
    op.add_column("idempotency_keys", sa.Column("sealed_body", sa.Text(), nullable=True))
    records = bind.execute(
        sa.text("SELECT id, caller, key, response_body FROM idempotency_keys")
    ).all()
    for row in records:
        bind.execute(
            sa.text(
                "UPDATE idempotency_keys SET key_hash = :hashed, sealed_body = :sealed "
                "WHERE id = :id"
            ),
            {
                "id": row.id,
                "hashed": idempotency.key_hash(row.caller, row.key),
                "sealed": (
                    idempotency.seal_response(
                        keyring, caller=row.caller, key=row.key, body=bytes(row.response_body)
                    )
                    if row.response_body is not None
                    else None
                ),
            },
        )
    op.drop_constraint("uq_idempotency_keys_caller_key", "idempotency_keys", type_="unique")
    op.drop_column("idempotency_keys", "key")
    op.drop_column("idempotency_keys", "response_body")
    op.alter_column("idempotency_keys", "sealed_body", new_column_name="response_body")
    op.alter_column("idempotency_keys", "key_hash", nullable=False)
    op.create_unique_constraint(
        op.f("uq_idempotency_keys_caller_key_hash"), "idempotency_keys", ["caller", "key_hash"]
    )


def downgrade() -> None:
    keyring = encryption.keyring(Settings())
    bind = op.get_bind()

    # Hashed keys cannot be recovered: the replays of the last day are forgotten.
    op.execute("DELETE FROM idempotency_keys")
    op.drop_constraint(
        op.f("uq_idempotency_keys_caller_key_hash"), "idempotency_keys", type_="unique"
    )
    op.drop_column("idempotency_keys", "key_hash")
    op.drop_column("idempotency_keys", "response_body")
    op.add_column("idempotency_keys", sa.Column("key", sa.String(length=255), nullable=False))
    op.add_column("idempotency_keys", sa.Column("response_body", sa.LargeBinary(), nullable=True))
    op.create_unique_constraint(
        op.f("uq_idempotency_keys_caller_key"), "idempotency_keys", ["caller", "key"]
    )

    endpoints = bind.execute(
        sa.text("SELECT id, secret, previous_secret FROM webhook_endpoints")
    ).all()
    for row in endpoints:
        bind.execute(
            sa.text(
                "UPDATE webhook_endpoints SET secret = :secret, previous_secret = :previous "
                "WHERE id = :id"
            ),
            {
                "id": row.id,
                "secret": webhook_endpoints.open_secret(keyring, row.id, row.secret),
                "previous": (
                    webhook_endpoints.open_secret(keyring, row.id, row.previous_secret)
                    if row.previous_secret is not None
                    else None
                ),
            },
        )
    op.alter_column("webhook_endpoints", "secret", type_=sa.String(length=100))
    op.alter_column("webhook_endpoints", "previous_secret", type_=sa.String(length=100))
