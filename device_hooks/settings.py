"""Settings of the device worker, simulator and broker tools. Precedence: environment > .env > defaults."""

from __future__ import annotations

from functools import lru_cache

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class DeviceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    database_url: str = "sqlite:///var/crm.db"
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    # The worker's own broker account (make run generates the password and writes it into the broker's
    # password file). Empty: connect anonymously, for a development broker without authentication.
    mqtt_worker_username: str = "crm-worker"
    mqtt_worker_password: SecretStr = SecretStr("")
    mqtt_client_id: str = "crm-device-worker"
    # A message is acknowledged after its batch is committed: bigger batches, fewer commits.
    batch_max: int = 2000
    batch_wait_ms: int = 10
    # Where proactive messages go: Rasa's HTTP API, with its token.
    rasa_url: str = "http://127.0.0.1:5005"
    rasa_token: SecretStr = SecretStr("")
    notify_poll_seconds: float = 1.0


@lru_cache
def get_settings() -> DeviceSettings:
    return DeviceSettings()
