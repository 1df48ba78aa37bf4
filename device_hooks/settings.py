"""Settings of the device worker, simulator and broker tools. Precedence: environment > .env > defaults."""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

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
    # The broker's TLS listener for devices (scripts/run_stack.py sets it with MQTT_CA_FILE, the CA of
    # device_hooks.pki): where the simulator connects with --tls unless told --port.
    mqtt_device_tls_port: int | None = None
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

    def mqtt_tls_config(self) -> MqttTls | None:
        """The worker's TLS to the broker (CA, client certificate), or None when MQTT_TLS is off."""
        if not self.mqtt_tls:
            return None
        return MqttTls(self.mqtt_ca_file, self.mqtt_cert_file, self.mqtt_key_file)

    @property
    def dead_letter_quota(self) -> DeadLetterQuota:
        return DeadLetterQuota(self.dead_letters_per_device, dt.timedelta(minutes=self.dead_letter_window_minutes))

    @property
    def verification_ttl(self) -> dt.timedelta:
        return dt.timedelta(minutes=self.verification_ttl_minutes)


@dataclass(frozen=True)
class MqttTls:
    """TLS of one MQTT connection: the CA file that verifies the broker (empty: the system's CAs) and an
    optional client certificate and key (PEM paths)."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    def apply(self, client: Any) -> None:
        """paho's ``tls_set`` on ``client`` (a paho ``Client``, not yet connected): the broker's certificate must
        chain to the CA (CERT_REQUIRED) and name the host connected to (hostname check on). Raises
        FileNotFoundError or ssl.SSLError for unreadable files."""
        client.tls_set(ca_certs=self.ca_file or None, certfile=self.cert_file or None, keyfile=self.key_file or None,
                       cert_reqs=ssl.CERT_REQUIRED)
        client.tls_insecure_set(False)


@lru_cache
def get_settings() -> DeviceSettings:
    return DeviceSettings()
