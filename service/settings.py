"""Settings read from the environment (prefix ENSEMBLE_, except DATABASE_URL and STRIPE_*)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    # An empty variable (STRIPE_API_KEY=) means "not set", as compose files write it.
    model_config = SettingsConfigDict(env_prefix="ENSEMBLE_", extra="ignore", env_ignore_empty=True)

    environment: Literal["development", "production"] = "development"
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "ENSEMBLE_DATABASE_URL")
    )
    data_dir: Path = PROJECT_ROOT / ".ensemble"
    timezone: str = "America/Edmonton"
    horizon_weeks: int = Field(default=12, ge=1, le=104)
    db_pool_size: int = Field(default=10, ge=1, le=200)
    stripe_api_key: SecretStr | None = Field(default=None, validation_alias="STRIPE_API_KEY")
    stripe_webhook_secret: SecretStr | None = Field(
        default=None, validation_alias="STRIPE_WEBHOOK_SECRET"
    )
    stripe_api_base: str = Field(
        default="https://api.stripe.com", validation_alias="STRIPE_API_BASE"
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _production_is_explicit(self) -> Settings:
        # The embedded database is a development convenience; production names its server.
        if self.environment == "production" and not self.database_url:
            raise ValueError("DATABASE_URL is required when ENSEMBLE_ENVIRONMENT=production")
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
