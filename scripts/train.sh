#!/usr/bin/env bash
# Trains the Rasa model unless one exists for the current data, config and Rasa version.
# Prints the model's path on stdout. Models are named by a fingerprint of their inputs.
set -euo pipefail
cd "$(dirname "$0")/.."
export RASA_TELEMETRY_ENABLED=false TF_CPP_MIN_LOG_LEVEL=3
# The custom NLU components' code (nlu/*.py) and the packaged model weights are inputs too.
fp=$( { find config.yml requirements/rasa.txt requirements/rasa-models.txt bot/domain.yml bot/data nlu \
          -type f -name '*.*' -not -path '*/__pycache__/*' -not -path 'nlu/test_data/*' -print0 \
        | sort -z | xargs -0 sha256sum; } | sha256sum | cut -c1-16)
model="models/bot-$fp.tar.gz"
if [ ! -f "$model" ]; then
  echo "==> training the Rasa model ($model)" >&2
  .venv-rasa/bin/rasa train --config config.yml --domain bot/domain.yml --data bot/data nlu/data \
    --out models --fixed-model-name "bot-$fp" >&2
fi
echo "$model"
