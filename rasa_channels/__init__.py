"""Rasa input channels of our own, loaded by the Rasa server (rasa environment) from credentials.yml.

Importing them also keeps personal data out of the Rasa server's log lines (see crm_store.logscrub).
"""

from crm_store.logscrub import install as _install_log_scrubbing

_install_log_scrubbing()
