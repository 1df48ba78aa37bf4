#!/usr/bin/env bash
# The whole test suite in one pytest run: store, actions, API, Rasa data validation and conversation
# tests, end-to-end through real processes, and the browser test. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
export RASA_TELEMETRY_ENABLED=false TF_CPP_MIN_LOG_LEVEL=3 PYTHONPATH="$PWD"
BOT_MODEL=$(bash scripts/train.sh) || { echo "error: training the Rasa model failed" >&2; exit 1; }
export BOT_MODEL
.venv-app/bin/python -m pytest tests -p no:cacheprovider "$@"
rc=$?
# pytest exits 5 when it collected no tests: that is a failure here, never a pass.
if [ "$rc" -eq 5 ]; then echo "error: no tests were run" >&2; exit 1; fi
exit "$rc"
