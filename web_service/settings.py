"""Settings of the web service. Precedence: environment > .env file > defaults."""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from crm_store.redis_auth import DEFAULT_KEY_PREFIX, key_prefix
from crm_store.repositories.customers import DEFAULT_VERIFICATION_TTL_MINUTES
from crm_store.repositories.ingest import DeadLetterQuota

PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "secret"}


class WebSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    environment: str = "development"
    database_url: str = "sqlite:///var/crm.db"
    # Signs API access tokens. Required: make run writes a random one into .env.
    secret_key: SecretStr
    # Comma-separated keys that signed tokens before the last rotation: they still verify, never sign.
    secret_keys_previous: SecretStr = SecretStr("")
    token_ttl_seconds: int = 8 * 3600
    # Sign-in attempts per client address (checked before the password hash is computed).
    sign_in_rate_per_client: str = "20/minute"
    # Failed sign-ins of one user name before a lock-out (1 min, doubling per further failure, at most 24 h).
    sign_in_max_failures: int = 5
    # Where the browser reaches Rasa's socket.io channel.
    rasa_public_url: str = "http://127.0.0.1:5005"
    # The key of a web-chat session id, as Rasa's socket.io channel issues it (crm_store.chat_sessions): the chat
    # routes require it. make run writes a random one into .env; every Rasa server and web replica shares it.
    chat_session_secret: SecretStr = SecretStr("")
    # The broker that device messages received over HTTP are handed to (as the http-bridge user).
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    mqtt_bridge_password: SecretStr = SecretStr("")
    # Rasa's HTTP API as the web service reaches it (agents' replies, handback, live transcripts).
    rasa_url: str = "http://127.0.0.1:5005"
    rasa_token: SecretStr = SecretStr("")
    rasa_timeout_seconds: float = 30.0
    # The action server as Rasa calls it (run_stack sets it); /health checks its /health beside it.
    action_endpoint_url: str = "http://127.0.0.1:5055/webhook"
    # Redis, when the stack uses one (e.g. redis://127.0.0.1:6379/0): /health checks it, and every replica
    # shares its rate-limit counters there (per process without it).
    redis_url: SecretStr = SecretStr("")
    # Its password, never put in the URL (as for Rasa's lock store), and the prefix of every key this service
    # writes there, so that two deployments sharing one Redis database never share a counter.
    redis_password: SecretStr = SecretStr("")
    redis_key_prefix: str = DEFAULT_KEY_PREFIX

    @field_validator("redis_key_prefix", mode="before")
    @classmethod
    def _key_prefix(cls, value: str | None) -> str:
        return key_prefix(value)  # empty: the default, as in every process

    # Each dependency check of /health gives up after this long.
    health_timeout_seconds: float = 2.0
    # Reading a live transcript for the console: short, it falls back to the handoff packet's copy.
    rasa_transcript_timeout_seconds: float = 3.0
    # Agent replies not delivered (Rasa was down) are retried this often, for up to a day; 0 switches it off.
    relay_retry_seconds: float = 15.0
    # A conversation no agent has taken after this long becomes a callback and the bot resumes.
    handoff_max_wait_minutes: int = 30
    handoff_sweep_seconds: float = 30.0
    # Origins (space-separated CSP sources) that may embed the chat page in a frame; empty: this site only.
    chat_frame_ancestors: str = ""
    # Web-chat push streams one client address may hold open on one web replica (each tab holds one).
    chat_streams_per_client: int = Field(default=40, ge=1)
    # Comma-separated origins allowed to call the API from a browser; empty: same origin only.
    cors_allow_origins: str = ""

    # Rasa's tracker store, named as in bot/endpoints.yml: the privacy export and erasure read and delete
    # conversations there. TRACKER_STORE_URL (an SQLAlchemy URL) wins when set.
    tracker_store_url: SecretStr = SecretStr("")
    tracker_dialect: str = ""
    tracker_host: str = ""
    tracker_db: str = ""
    tracker_user: str = ""
    tracker_password: SecretStr = SecretStr("")
    # How often this replica looks for due erasures and for the retention job (which runs once per
    # RETENTION_INTERVAL_MINUTES across replicas). 0 switches the background job off.
    privacy_poll_seconds: float = 10.0
    # The action server's VERIFICATION_TTL_MINUTES: an open chat whose verification expired is anonymous, its
    # presence reports release no held message to it.
    verification_ttl_minutes: int = Field(default=DEFAULT_VERIFICATION_TTL_MINUTES, gt=0)

    @model_validator(mode="after")
    def _no_placeholder_secrets(self) -> WebSettings:
        value = self.secret_key.get_secret_value()
        if self.environment != "development" and (value.lower() in PLACEHOLDER_SECRETS or len(value) < 32):
            raise ValueError("SECRET_KEY must be a random value of at least 32 characters outside development")
        return self


    # Dead letters (refused device messages kept as evidence) per device and window: beyond it a refused message
    # is only counted (per device and reason, crm_store.repositories.ingest.ration_dead_letters). The device
    # worker reads the same two variables.
    dead_letters_per_device: int = Field(default=100, ge=0)
    dead_letter_window_minutes: int = Field(default=60, gt=0)

    @property
    def dead_letter_quota(self) -> DeadLetterQuota:
        return DeadLetterQuota(self.dead_letters_per_device, dt.timedelta(minutes=self.dead_letter_window_minutes))

    @property
    def verification_ttl(self) -> dt.timedelta:
        return dt.timedelta(minutes=self.verification_ttl_minutes)

    @property
    def previous_secret_keys(self) -> list[str]:
        return [k.strip() for k in self.secret_keys_previous.get_secret_value().split(",") if k.strip()]


@lru_cache
def get_settings() -> WebSettings:
    return WebSettings()  # type: ignore[call-arg]  # secret_key comes from the environment
