"""The launcher's supervisor restarts a process that dies, in both topologies: kill -9 of a worker, an
action server, a web service and a Rasa server, each back and serving without a hand, the death and the
restart written to the supervisor's output."""

from __future__ import annotations

import json
import urllib.request
import uuid

import pytest

from tests.e2e.conftest import Stack, http_ok, rest_headers, wait_until
from tests.e2e.test_device_flows import query, simulator


def name(stack: Stack, kind: str) -> str:
    return kind if stack.topology == "embedded" else f"{kind}-1"


def messages_of(stack: Stack, serial: str) -> int:
    return int(query(stack, "SELECT count(*) FROM device_messages m JOIN devices d ON d.id = m.device_id "
                            "WHERE d.serial = ?", serial)[0][0])


def test_a_killed_worker_is_restarted_and_telemetry_is_stored_again(stack: Stack):
    child = name(stack, "worker")
    old = stack.kill9(child)
    new = stack.wait_restarted(child, old, timeout=60)
    serial = "FR50-21000101"
    before = messages_of(stack, serial)
    simulator(stack, "run", "--serial", serial, "--interval", "0.3", "--duration", "1")
    wait_until(lambda: messages_of(stack, serial) > before, 60, "the telemetry is stored")
    assert stack.pids()[child] == new  # it stayed up: no crash loop after the restart


@pytest.mark.parametrize("kind", ["actions", "web"])
def test_a_killed_server_is_restarted_and_answers_its_health_check(stack: Stack, kind: str):
    child = name(stack, kind)
    old = stack.kill9(child)
    stack.wait_restarted(child, old, timeout=60)
    wait_until(lambda: http_ok(f"{stack.instance_url(child)}/health"), 60, f"{child} answers /health")
    # And through the stack's public address (the load balancer in production).
    public = stack.web_url if kind == "web" else stack.actions_url
    wait_until(lambda: http_ok(f"{public}/health"), 30, f"{kind} answers through {public}")


def test_a_killed_rasa_server_is_restarted_with_its_model_and_answers(stack: Stack):
    child = name(stack, "rasa")
    old = stack.kill9(child)
    stack.wait_restarted(child, old, timeout=60)
    url = stack.instance_url(child)

    def model_loaded() -> bool:
        with urllib.request.urlopen(stack.rasa_request("/status", base=url), timeout=5) as resp:
            return bool(json.loads(resp.read()).get("model_file"))

    wait_until(model_loaded, 300, f"{child} has loaded its model again")
    req = urllib.request.Request(f"{url}/webhooks/rest/webhook", headers=rest_headers(stack.env),
                                 data=json.dumps({"sender": f"restart-{uuid.uuid4().hex[:8]}", "message": "hello"}).encode())
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert json.loads(resp.read())[0]["text"].startswith("Hi! I'm the service assistant")
