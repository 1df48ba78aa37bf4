# Two commands matter: `make run` and `make test`. Everything else is a step they use.
SHELL := /bin/bash
APP_PY := .venv-app/bin/python
# The embedded broker of `make run`; set MQTT_PORT=1883 for a broker configured in .env.
MQTT_PORT ?= 1884

.PHONY: run test setup setup-test train demo-data migrate validate bench-ingest bench-chat bench-nlu tune-nlu tune-fallback simulate clean

run: setup
	$(APP_PY) scripts/run_stack.py

test: setup-test
	bash scripts/test.sh

setup:
	bash scripts/setup.sh

setup-test:
	bash scripts/setup.sh --browser

train: setup
	bash scripts/train.sh

migrate: setup
	PYTHONPATH=. $(APP_PY) -m crm_store.migrate

demo-data: migrate
	PYTHONPATH=. $(APP_PY) -m crm_store.demo_data --if-empty

validate: setup
	RASA_TELEMETRY_ENABLED=false .venv-rasa/bin/rasa data validate --config config.yml --domain bot/domain.yml --data bot/data nlu/data

# Device ingestion benchmark: writes bench/results/ingest.json (see README, Performance).
bench-ingest: setup
	model=$$(bash scripts/train.sh | tail -n 1) && $(APP_PY) bench/bench_ingest.py --model "$$model" $(BENCH_ARGS)

# Chat benchmark: 1, 10, 20 and 50 concurrent conversations through one Rasa server (REST and socket.io), the
# product's bot against `rasa init`'s bot on the same Rasa in the same run. Writes bench/results/chat.json (see
# README, Performance). BENCH_ARGS passes options, e.g. BENCH_ARGS="--levels 20 --channels rest".
bench-chat: setup
	model=$$(bash scripts/train.sh | tail -n 1) && RASA_TELEMETRY_ENABLED=false TF_CPP_MIN_LOG_LEVEL=3 \
		.venv-rasa/bin/python bench/bench_chat.py --model "$$model" $(BENCH_ARGS)

# NLU benchmark on a public data set folder (BANKING77, CLINC150 or Bitext layout): the project's pipeline
# against Rasa's default one (cached per data set, Rasa version and config; BASELINE=skip leaves it out
# when not cached, BASELINE=run retrains it). Writes bench/results/nlu-<folder>.json (see README, Performance).
DATASET ?= ../shared/benchmarks/banking77
BASELINE ?= auto
bench-nlu: setup
	PYTHONPATH=. RASA_TELEMETRY_ENABLED=false TF_CPP_MIN_LOG_LEVEL=3 .venv-rasa/bin/python bench/bench_nlu.py "$(DATASET)" --baseline $(BASELINE)

# The benchmark pipeline's classifier settings, chosen on validation data (never a test split): writes
# bench/results/tune-<folder>.json; copy the chosen values into bench/configs/project_nlu.yml.
tune-nlu: setup
	PYTHONPATH=. RASA_TELEMETRY_ENABLED=false TF_CPP_MIN_LOG_LEVEL=3 .venv-rasa/bin/python bench/tune_nlu.py "$(DATASET)"

# The bot's FallbackClassifier threshold, chosen by 5-fold cross-validation on nlu/data (never the held-out
# test file): writes bench/results/fallback-threshold.json; copy the chosen value into config.yml.
tune-fallback: setup
	PYTHONPATH=. RASA_TELEMETRY_ENABLED=false TF_CPP_MIN_LOG_LEVEL=3 .venv-rasa/bin/python scripts/tune_fallback.py

# Telemetry from 50 demo devices into the broker of a running `make run` (Ctrl-C to stop).
simulate: setup
	PYTHONPATH=. $(APP_PY) -m device_hooks.simulator --port $(MQTT_PORT) run --devices 50 --interval 5

clean:
	rm -rf .venv-app .venv-rasa models var .pytest_cache
