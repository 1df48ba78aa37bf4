"""Settings of the device worker, simulator and broker tools. Precedence: environment > .env > defaults."""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from crm_store.repositories.customers import DEFAULT_VERIFICATION_TTL_MINUTES
from crm_store.repositories.ingest import DeadLetterQuota


class DeviceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    database_url: str = "sqlite:///var/crm.db"
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    # The worker's own broker account (make run generates the password and writes it into the broker's
    # password file). Empty: connect anonymously, for a development broker without authentication.
    mqtt_worker_username: str = "crm-worker"
    mqtt_worker_password: SecretStr = SecretStr("")
    # Each worker needs its own client id (its persistent session). Workers of one share group split the
    # stream (MQTT shared subscription, e.g. "crm-workers"); empty: a plain subscription, every worker gets
    # every message. Empty by default (one worker): Mosquitto 2.0.11 loses the messages queued for a shared
    # subscription's session when the broker restarts, a plain subscription's survive
    # (tests/device_hooks/test_worker_scale.py).
    mqtt_client_id: str = "crm-device-worker"
    mqtt_share_group: str = ""
    # How long the broker keeps a disconnected worker's session and queued messages (MQTT 5 session expiry).
    mqtt_session_expiry_seconds: int = 7 * 24 * 3600
    # Unacknowledged messages the broker may have in flight to a worker (MQTT 5 Receive Maximum): with
    # acknowledgements after commit it must cover a few batches.
    mqtt_receive_maximum: int = 10000
    # TLS to the broker (paho's tls_set): CA bundle to verify the broker, optional client certificate.
    mqtt_tls: bool = False
    mqtt_ca_file: str = ""
    mqtt_cert_file: str = ""
    mqtt_key_file: str = ""
    # A message is acknowledged after its batch is committed: bigger batches, fewer commits.
    batch_max: int = 2000
    batch_wait_ms: int = 10
    # PostgreSQL: a batch's statements (lock waits included) fail after this long and the batch is retried.
    db_statement_timeout_ms: int = 30_000
    # Where proactive messages go: Rasa's HTTP API, with its token.
    rasa_url: str = "http://127.0.0.1:5005"
    rasa_token: SecretStr = SecretStr("")
    notify_poll_seconds: float = 1.0
    # A chat whose verification is older than this (the action server's VERIFICATION_TTL_MINUTES) is not
    # pushed to: the message is held until the customer verifies again.
    verification_ttl_minutes: int = Field(default=DEFAULT_VERIFICATION_TTL_MINUTES, gt=0)

    # Dead letters (refused device messages kept as evidence) per device and window: beyond it a refused message
    # is only counted (per device and reason, crm_store.repositories.ingest.ration_dead_letters). The web
    # service's HTTP ingestion reads the same two variables.
    dead_letters_per_device: int = Field(default=100, ge=0)
    dead_letter_window_minutes: int = Field(default=60, gt=0)

    @property
    def dead_letter_quota(self) -> DeadLetterQuota:
        return DeadLetterQuota(self.dead_letters_per_device, dt.timedelta(minutes=self.dead_letter_window_minutes))

    @property
    def verification_ttl(self) -> dt.timedelta:
        return dt.timedelta(minutes=self.verification_ttl_minutes)


@lru_cache
def get_settings() -> DeviceSettings:
    return DeviceSettings()
