# Two commands matter: `make run` and `make test`. Everything else is a step they use.
SHELL := /bin/bash
APP_PY := .venv-app/bin/python
# The embedded broker of `make run`; set MQTT_PORT=1883 for a broker configured in .env.
MQTT_PORT ?= 1884
# Its TLS listener for devices (the CA of var/pki).
MQTT_TLS_PORT ?= 8884

.PHONY: run run-production test setup setup-test train demo-data migrate retention validate bench-privacy bench-ingest bench-ingest-production bench-device-burst bench-dialogue bench-chat bench-chat-production fuzz bench-nlu tune-nlu tune-fallback simulate clean

run: setup
	$(APP_PY) scripts/run_stack.py

# The topology an operator deploys, on this machine: PostgreSQL (CRM and Rasa's tracker store), Redis
# (Rasa's lock store, shared socket.io rooms), HAProxy in front of two Rasa servers, two action servers
# and two web replicas, two device workers, Mosquitto. Configuration from the environment (DATABASE_URL,
# TRACKER_STORE_URL, REDIS_URL; see README, Topologies); generated files in var/production/.
run-production: setup
	$(APP_PY) scripts/run_stack.py --topology production

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

# Retention (see README, Privacy): deletes what is older than each kind's period and finishes due erasures.
retention: migrate
	PYTHONPATH=. $(APP_PY) -m crm_store.retention --force

validate: setup
	RASA_TELEMETRY_ENABLED=false .venv-rasa/bin/rasa data validate --config config.yml --domain bot/domain.yml --data bot/data nlu/data

# Privacy benchmark: export and erase of a customer with 10,000 telemetry messages (bench/results/privacy.json).
bench-privacy: setup
	PYTHONPATH=. $(APP_PY) bench/bench_privacy.py $(BENCH_ARGS)

# Device ingestion benchmark: writes bench/results/ingest.json (see README, Performance).
bench-ingest: setup
	model=$$(bash scripts/train.sh | tail -n 1) && $(APP_PY) bench/bench_ingest.py --model "$$model" $(BENCH_ARGS)

# PostgreSQL, two workers on a shared subscription (the one-worker figure in the same run):
# bench/results/ingest-production.json.
bench-ingest-production: setup
	model=$$(bash scripts/train.sh | tail -n 1) && $(APP_PY) bench/bench_ingest.py --model "$$model" --postgres --workers 2 $(BENCH_ARGS)

# 20 simultaneous device posts over HTTP with chat-side traffic on the SQLite default, against a same-run
# static-page baseline: bench/results/device-burst.json (target: every post 202 in under 1 s).
bench-device-burst: setup
	PYTHONPATH=. $(APP_PY) bench/bench_device_burst.py $(BENCH_ARGS)

# Conversation suite (bench/dialogue_suite.yml) through a real stack: writes bench/results/dialogue.json.
bench-dialogue: setup
	model=$$(bash scripts/train.sh | tail -n 1) && PYTHONPATH=. $(APP_PY) bench/bench_dialogue.py --model "$$model" $(BENCH_ARGS)

# Hostile inputs against a real embedded stack with the production limits: chat over REST and socket.io, the
# OpenAPI routes (schemathesis), MQTT and HTTP device payloads, a 10,000-guess verification brute force, then every
# log and the process list searched for secrets. Writes bench/results/fuzz.json (see README, Security). Counts are
# options: make fuzz BENCH_ARGS="--rest 500 --guesses 1000".
fuzz: setup
	model=$$(bash scripts/train.sh | tail -n 1) && PYTHONPATH=. $(APP_PY) bench/fuzz.py --model "$$model" $(BENCH_ARGS)

# Chat benchmark: 1, 10, 20 and 50 concurrent conversations through one Rasa server (REST and socket.io), the
# product's bot against `rasa init`'s bot on the same Rasa in the same run. Writes bench/results/chat.json (see
# README, Performance). BENCH_ARGS passes options, e.g. BENCH_ARGS="--levels 20 --channels rest".
bench-chat: setup
	model=$$(bash scripts/train.sh | tail -n 1) && RASA_TELEMETRY_ENABLED=false TF_CPP_MIN_LOG_LEVEL=3 \
		.venv-rasa/bin/python bench/bench_chat.py --model "$$model" $(BENCH_ARGS)

# The same on make run-production's topology, started by the benchmark on throw-away PostgreSQL databases:
# bench/results/chat-production.json.
bench-chat-production: setup
	model=$$(bash scripts/train.sh | tail -n 1) && RASA_TELEMETRY_ENABLED=false TF_CPP_MIN_LOG_LEVEL=3 \
		.venv-rasa/bin/python bench/bench_chat.py --model "$$model" --topology production $(BENCH_ARGS)

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

# Telemetry from 50 demo devices into the broker of a running `make run` or `make run-production`, over TLS
# (Ctrl-C to stop).
simulate: setup
	PYTHONPATH=. $(APP_PY) -m device_hooks.simulator --port $(MQTT_TLS_PORT) --tls --ca-file var/pki/ca.crt run --devices 50 --interval 5

clean:
	rm -rf .venv-app .venv-rasa models var .pytest_cache
