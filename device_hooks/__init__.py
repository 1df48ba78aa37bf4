"""Device telemetry ingestion (MQTT and HTTP); arrives with the device-fault issue.

Every process of this package (worker, simulator, broker tools) logs without e-mail addresses, phone
numbers, order numbers or serials (see crm_store.logscrub).
"""

from crm_store.logscrub import install as _install_log_scrubbing

_install_log_scrubbing()
