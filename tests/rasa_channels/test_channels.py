"""Runs the channel tests (tests/rasa_channels/rasa_env) in the Rasa environment, where Rasa is installed."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
RASA_PY = ROOT / ".venv-rasa" / "bin" / "python"


@pytest.mark.skipif(importlib.util.find_spec("rasa") is not None, reason="collected directly in this environment")
def test_channel_tests_pass_in_the_rasa_environment():
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3", RASA_TELEMETRY_ENABLED="false")
    result = subprocess.run(
        [str(RASA_PY), "-m", "pytest", "tests/rasa_channels/rasa_env", "-q", "-p", "no:cacheprovider",
         "--confcutdir", "tests/rasa_channels"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    assert " passed" in result.stdout
