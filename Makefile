# Two commands matter: `make run` and `make test`. Everything else is a step they use.
SHELL := /bin/bash
APP_PY := .venv-app/bin/python

.PHONY: run test setup setup-test train demo-data migrate validate clean

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

clean:
	rm -rf .venv-app .venv-rasa models var .pytest_cache
