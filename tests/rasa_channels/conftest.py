"""The channel tests import Rasa, which lives in .venv-rasa: under the app environment they are run through
test_channels.py, which starts the Rasa environment's pytest on tests/rasa_channels/rasa_env."""

from __future__ import annotations

import importlib.util

collect_ignore = [] if importlib.util.find_spec("rasa") else ["rasa_env"]
