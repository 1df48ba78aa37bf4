"""The deployment files an operator uses elsewhere (deploy/), checked as far as this machine allows: no
container engine here, so compose.yaml is validated by docker-compose's own `config` (offline), the
HAProxy configurations by `haproxy -c`, and the topology by reading the files."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from ruamel.yaml import YAML

from device_hooks.pki import ensure_pki
from scripts.topology import haproxy_config

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SECRETS = ("POSTGRES_PASSWORD", "SECRET_KEY", "RASA_TOKEN", "ACTION_SERVER_TOKEN", "MQTT_WORKER_PASSWORD",
           "MQTT_BRIDGE_PASSWORD", "ADMIN_PASSWORD", "CHAT_SESSION_SECRET")


def tool(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing: scripts/setup.sh installs it")
        pytest.skip(f"{name} is not installed (scripts/setup.sh installs it)")
    return path


@contextmanager
def running_haproxy(cfg: pathlib.Path, *ports: int) -> Iterator[subprocess.Popen[bytes]]:
    """The real HAProxy on ``cfg`` (foreground), yielded once each of ``ports`` accepts connections (20 s at most);
    terminated afterwards."""
    proc = subprocess.Popen([tool("haproxy"), "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        for port in ports:
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    alive = proc.poll() is None
                    assert alive and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
                    time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


def compose_config(env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    env.update(env_extra)
    return subprocess.run([tool("docker-compose"), "-f", str(DEPLOY / "compose.yaml"), "config", "-q"],
                          env=env, capture_output=True, text=True, timeout=60)


def compose() -> dict:
    return YAML(typ="safe").load((DEPLOY / "compose.yaml").read_text())


def test_compose_file_is_valid_and_refuses_to_start_without_its_secrets():
    ok = compose_config({k: "x" * 40 for k in SECRETS})
    assert ok.returncode == 0, ok.stderr
    missing = compose_config({k: "x" * 40 for k in SECRETS if k != "RASA_TOKEN"})
    assert missing.returncode != 0 and "set RASA_TOKEN" in missing.stderr


def test_compose_runs_the_production_topology():
    services = compose()["services"]
    for name in ("rasa", "actions", "web"):
        assert services[name]["deploy"]["replicas"] == 2, name
    workers = [s["environment"] for n, s in services.items() if n.startswith("worker-")]
    assert len(workers) == 2
    assert len({w["MQTT_CLIENT_ID"] for w in workers}) == 2 and {w["MQTT_SHARE_GROUP"] for w in workers} == {"crm-workers"}
    rasa = services["rasa"]["environment"]
    assert rasa["ACTION_ENDPOINT_URL"] == "http://haproxy:5055/webhook"  # both action servers, balanced
    assert rasa["SOCKETIO_REDIS_URL"].startswith("redis://redis:") and rasa["REDIS_KEY_PREFIX"].isalnum()
    assert services["web"]["environment"]["DATABASE_URL"].startswith("postgresql+psycopg://")
    # Every replicated process counts its rate limits in the one Redis (per process, each replica would admit
    # its own share again), with the password from the environment rather than in the URL.
    for name in ("rasa", "actions", "web"):
        env = services[name]["environment"]
        assert env["REDIS_URL"].startswith("redis://redis:") and "@" not in env["REDIS_URL"], name
        assert env["REDIS_PASSWORD"] == "${REDIS_PASSWORD:-}" and env["REDIS_KEY_PREFIX"].isalnum(), name
    # ... and Redis asks for that same password (set only on the clients, it was refused), kept off command lines.
    redis = services["redis"]
    assert redis["environment"]["REDIS_PASSWORD"] == "${REDIS_PASSWORD:-}"
    assert "requirepass" in redis["command"][-1] and "$$REDIS_PASSWORD" in redis["command"][-1]
    assert "-a " not in redis["healthcheck"]["test"][-1] and "REDISCLI_AUTH" in redis["healthcheck"]["test"][-1]
    assert "endpoints.production.yml" in (DEPLOY / "Dockerfile.rasa").read_text()


def test_the_rasa_image_starts_rasa_as_make_run_production_does():
    """Through scripts/rasa_server.py: the API token stays off the command line (a JWT secret inside the process, not
    --auth-token, which also takes ?token= in URLs), and nlu/rasa_runtime.py's changes wrap Rasa's model load."""
    dockerfile = (DEPLOY / "Dockerfile.rasa").read_text()
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE).group(1))
    assert cmd[:3] == ["python", "scripts/rasa_server.py", "run"] and "--enable-api" in cmd
    assert "COPY scripts/rasa_server.py scripts/rasa_server.py" in dockerfile
    assert not any("TOKEN" in part or part == "--auth-token" for part in cmd)


def test_no_secret_is_written_into_the_deployment_files():
    text = (DEPLOY / "compose.yaml").read_text()
    for key in SECRETS:
        for value in re.findall(rf"{key}: (.+)", text):
            assert value.startswith("${"), f"{key} must come from the environment, not the file"
    assert not re.search(r"://[^/\s@]+:[^/\s@]+@", text)  # no password in a URL


def test_dockerfiles_copy_only_what_exists():
    for dockerfile in DEPLOY.glob("Dockerfile.*"):
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY "):
                for source in line.split()[1:-1]:
                    assert (ROOT / source).exists(), f"{dockerfile.name}: {source}"


@pytest.mark.parametrize("config", ["deploy", "generated"])
def test_haproxy_configurations_are_valid_and_health_check_every_backend(config: str, tmp_path: pathlib.Path):
    if config == "deploy":
        path = DEPLOY / "haproxy.cfg"
    else:  # what make run-production writes into var/production/
        ports = {f"{k}-{i}": 20000 + n for n, (k, i) in enumerate((k, i) for k in ("rasa", "actions", "web") for i in (1, 2))}
        path = tmp_path / "haproxy.cfg"
        pem = ensure_pki(tmp_path / "pki").files.server_pem  # haproxy -c loads the certificate too
        path.write_text(haproxy_config(15005, 15055, 18000, ports, web_tls=(18443, str(pem))))
    result = subprocess.run([tool("haproxy"), "-c", "-f", str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "Configuration file is valid" in result.stdout + result.stderr, result.stderr
    text = path.read_text()
    backends = dict(re.findall(r"^backend (\w+)\n((?:  .*\n?)+)", text, re.M))
    assert set(backends) == {"rasa", "actions", "web"}
    assert "option httpchk GET /\n" in backends["rasa"] and "cookie RASA_SERVER insert" in backends["rasa"]
    assert "option httpchk GET /health" in backends["actions"] and "option httpchk GET /health" in backends["web"]
    for body in backends.values():
        assert re.search(r"^  server(-template)? .* check", body, re.M)
