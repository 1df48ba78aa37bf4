"""Settings of the action server. Precedence: environment > .env file > defaults."""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from crm_store.redis_auth import DEFAULT_KEY_PREFIX, key_prefix
from crm_store.repositories.customers import DEFAULT_VERIFICATION_TTL_MINUTES


class ActionSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    database_url: str = "sqlite:///var/crm.db"
    action_server_host: str = "127.0.0.1"
    action_server_port: int = 5055
    # Shared with Rasa (bot/endpoints.yml sends it as a bearer token). Required: make run generates it.
    action_server_token: SecretStr
    # Wrong verification details allowed per conversation before the bot stops trying.
    verify_max_attempts: int = 3
    # Failures of one e-mail address (any conversation) and of one chat client address before a lock-out of
    # 1 min, doubling with each further failure up to 24 h (crm_store.repositories.lockouts).
    verify_max_failures_per_identity: int = 5
    verify_max_failures_per_client: int = 20
    # How long a verified chat stays linked to its customer (minutes from the verification, kept in the CRM's
    # chat-link row): after it no account data is shown and the bot asks to verify again. The device worker
    # reads the same variable (device_hooks.settings) so that it never pushes to an expired chat.
    verification_ttl_minutes: int = Field(default=DEFAULT_VERIFICATION_TTL_MINUTES, gt=0)

    # New handoffs an unverified chat may queue (``limits`` syntax, moving window): per conversation and per
    # client address (actions.escalation_limits); a verified customer's are not limited. They open no ticket.
    anonymous_escalations_per_conversation: str = "2/hour"
    anonymous_escalations_per_client: str = "5/hour"
    # Redis (e.g. redis://127.0.0.1:6379/3): the escalation limits count across every action server there;
    # empty: per process.
    redis_url: SecretStr = SecretStr("")
    # Its password (never in the URL) and the prefix of this deployment's keys there.
    redis_password: SecretStr = SecretStr("")
    redis_key_prefix: str = DEFAULT_KEY_PREFIX

    @field_validator("redis_key_prefix", mode="before")
    @classmethod
    def _key_prefix(cls, value: str | None) -> str:
        return key_prefix(value)  # empty: the default, as in every process

    # A confirmed chat erasure starts this long after the confirming turn, so that the turn and the bot's reply
    # are already in the tracker store and are erased with the rest (Rasa saves the tracker after the turn).
    chat_erasure_delay_seconds: float = Field(default=60.0, ge=1.0)

    @property
    def verification_ttl(self) -> dt.timedelta:
        return dt.timedelta(minutes=self.verification_ttl_minutes)

    @property
    def chat_erasure_delay(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.chat_erasure_delay_seconds)


@lru_cache
def get_settings() -> ActionSettings:
    return ActionSettings()  # type: ignore[call-arg]  # the token comes from the environment
