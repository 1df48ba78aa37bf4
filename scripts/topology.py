"""The two topologies that scripts/run_stack.py starts.

embedded (``make run``): SQLite, one process of each kind, the project's own Mosquitto.

production (``make run-production``), what an operator deploys, on one machine::

    PostgreSQL: CRM (DATABASE_URL) and Rasa's SQLTrackerStore (TRACKER_STORE_URL)
    Redis (REDIS_URL): Rasa's RedisLockStore and the socket.io client manager shared by both Rasa servers
    HAProxy: rasa-1/rasa-2 (sticky by cookie), actions-1/actions-2, web-1/web-2, health-checked
    worker-1/worker-2: distinct MQTT_CLIENT_ID, one MQTT_SHARE_GROUP
    Mosquitto (embedded) or the broker named by MQTT_HOST
    devices: MQTT over TLS only, HTTP ingest over HAProxy's HTTPS frontend only (the project's CA, var/pki)

Configuration comes from the environment; generated files (haproxy.cfg, Rasa's credentials.yml, the
broker's configuration) go to the state folder: var/production/ for ``make run-production``.
"""

from __future__ import annotations

import pathlib
import secrets
import socket
import threading
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field

PRODUCTION_DEFAULTS = {
    "DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/appliance_care",
    "TRACKER_STORE_URL": "postgresql://postgres@127.0.0.1:5432/appliance_care_tracker",
    # A Redis database index of its own; the key prefix and socket.io channel keep deployments apart
    # (Redis pub/sub channels are shared by all database indexes).
    "REDIS_URL": "redis://127.0.0.1:6379/3",
    "REDIS_KEY_PREFIX": "appliancecare",
    "MQTT_SHARE_GROUP": "crm-workers",
}
REPLICAS = 2


@dataclass
class Process:
    name: str
    cmd: list[str]
    env: dict[str, str] = field(default_factory=dict)  # on top of the stack's environment


@dataclass
class Plan:
    processes: list[Process]
    ready_urls: list[str]  # every one answers 200 when the stack is ready
    rasa_instances: list[str]  # each Rasa server's own address (the load balancer's is args.rasa_port)


_PORTS_GIVEN: set[int] = set()
_PORTS_GUARD = threading.Lock()


def free_port() -> int:
    """A loopback TCP port nobody listens on now and never handed out before by this process.

    Why the memory: the kernel may give the same free port to two binds in a row, and two listeners of one
    stack planned on one port fail with "Address already in use" (seen in CI: a broker's service and TLS
    listeners)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        with _PORTS_GUARD:
            if port not in _PORTS_GIVEN:
                _PORTS_GIVEN.add(port)
                return port


def production_env(env: dict[str, str]) -> None:
    """Production defaults and the per-component variables derived from the three URLs (in place).

    Passwords never travel in these URLs: TRACKER_PASSWORD and REDIS_PASSWORD are separate variables.
    Raises SystemExit for a configuration the production topology cannot run on (SQLite).
    """
    for key, value in PRODUCTION_DEFAULTS.items():
        if not env.get(key):
            env[key] = value
    if not env["DATABASE_URL"].startswith("postgresql"):
        raise SystemExit(f"the production topology keeps the CRM in PostgreSQL; DATABASE_URL is "
                         f"{env['DATABASE_URL'].split(':', 1)[0]} (set DATABASE_URL, or remove it from .env)")
    tracker = urllib.parse.urlsplit(env["TRACKER_STORE_URL"])
    if tracker.password or tracker.scheme.split("+")[0] != "postgresql":
        raise SystemExit("TRACKER_STORE_URL must be postgresql://user@host:port/db (the password goes in TRACKER_PASSWORD)")
    env.update({"TRACKER_DIALECT": "postgresql", "TRACKER_HOST": tracker.hostname or "127.0.0.1",
                "TRACKER_PORT": str(tracker.port or 5432), "TRACKER_DB": tracker.path.lstrip("/"),
                "TRACKER_USER": urllib.parse.unquote(tracker.username or "")})
    env.setdefault("TRACKER_PASSWORD", "")
    redis = urllib.parse.urlsplit(env["REDIS_URL"])
    if redis.password:
        raise SystemExit("REDIS_URL must not carry a password: set REDIS_PASSWORD")
    if not env["REDIS_KEY_PREFIX"].isalnum():
        raise SystemExit("REDIS_KEY_PREFIX must be alphanumeric (Rasa's RedisLockStore requires it)")
    env.update({"REDIS_HOST": redis.hostname or "127.0.0.1", "REDIS_PORT": str(redis.port or 6379),
                "REDIS_DB": redis.path.lstrip("/") or "0"})
    env.setdefault("REDIS_PASSWORD", "")
    env.update({"SOCKETIO_REDIS_URL": env["REDIS_URL"], "SOCKETIO_REDIS_PASSWORD": env["REDIS_PASSWORD"],
                "SOCKETIO_REDIS_CHANNEL": f"{env['REDIS_KEY_PREFIX']}-socketio"})


# Generated once into .env by run_stack.py so that a fresh clone runs with real secrets, never placeholders.
GENERATED_SECRETS = ("SECRET_KEY", "RASA_TOKEN", "ACTION_SERVER_TOKEN", "ADMIN_PASSWORD", "MQTT_WORKER_PASSWORD",
                     "MQTT_BRIDGE_PASSWORD", "CHAT_SESSION_SECRET", "REST_CHANNEL_TOKEN")
# What a throw-away stack (a test session's, a benchmark's) never takes from the caller's environment: the launcher
# generates the secrets into the stack's own .env, and where it keeps its data is its own (an operator's shell, or
# another stack's, may have set any of these).
STACK_OWN_VARIABLES = (
    *GENERATED_SECRETS, "MQTT_HOST", "MQTT_PORT", "DATABASE_URL", "TRACKER_STORE_URL", "TRACKER_PASSWORD", "REDIS_URL",
    "REDIS_KEY_PREFIX", "REDIS_PASSWORD", "ESCALATION_CONFIG", "VIRTUAL_ENV",
)
ALWAYS_STAFFED = "staffed_hours:\n  always: true\n"


def throwaway_env(base: Mapping[str, str], work: pathlib.Path, topology: str = "embedded", *, name: str = "stack",
                  postgres_url: str = "", redis_db: int = 5, escalation: str | None = ALWAYS_STAFFED
                  ) -> tuple[dict[str, str], list[str]]:
    """The environment for ``run_stack.py --topology <topology>`` with data of its own in ``work``.

    Returns (environment, PostgreSQL database names): ``base`` without :data:`STACK_OWN_VARIABLES`, plus
    - both: a REST channel token of its own (64 hex characters), for the caller is the trusted back end that the
      REST channel requires;
    - embedded: the CRM and the tracker store in SQLite files in ``work`` (no databases);
    - production: two new database names (``<name>_crm_<random>``, ``<name>_tracker_<random>``) on the server of
      ``postgres_url`` (``postgresql+psycopg://user[:password]@host:port/any``; ``run_stack.py`` creates them when
      missing, the caller drops them);
      Redis database ``redis_db`` with a key prefix (and so a socket.io channel) of its own;
    - both: ``escalation`` (YAML; by default the team staffed around the clock, so that no conversation is handed to
      a person because of the hour the run happens at) written to ``work/escalation.yml``; None: the shipped rules.
    Raises ValueError for a topology other than ``embedded`` or ``production``.
    """
    env = {key: value for key, value in base.items() if key not in STACK_OWN_VARIABLES}
    env["REST_CHANNEL_TOKEN"] = secrets.token_hex(32)
    if escalation is not None:
        (work / "escalation.yml").write_text(escalation)
        env["ESCALATION_CONFIG"] = str(work / "escalation.yml")
    if topology == "embedded":
        env.update({"DATABASE_URL": f"sqlite:///{work}/crm.db", "TRACKER_DIALECT": "sqlite",
                    "TRACKER_DB": str(work / "tracker.db")})
        return env, []
    if topology != "production":
        raise ValueError(f"unknown topology {topology!r}")
    suffix = secrets.token_hex(5)
    databases = [f"{name}_crm_{suffix}", f"{name}_tracker_{suffix}"]
    server = urllib.parse.urlsplit(postgres_url)
    user_info, _, host_port = server.netloc.rpartition("@")
    user, _, password = user_info.partition(":")
    env.update({
        "DATABASE_URL": f"postgresql+psycopg://{server.netloc}/{databases[0]}",
        # Rasa's tracker store takes the password apart (production_env refuses one in the URL).
        "TRACKER_STORE_URL": f"postgresql://{user + '@' if user else ''}{host_port}/{databases[1]}",
        "TRACKER_PASSWORD": urllib.parse.unquote(password),
        "REDIS_URL": f"redis://127.0.0.1:6379/{redis_db}", "REDIS_KEY_PREFIX": f"{name}{suffix}",
    })
    return env, databases


def ensure_databases(env: dict[str, str]) -> None:
    """Creates the CRM and tracker databases when missing (connecting to the server's ``postgres`` db)."""
    from crm_store.db import create_missing_databases  # imported here: the launcher's other paths need no CRM

    crm = urllib.parse.urlsplit(env["DATABASE_URL"])
    crm_db = urllib.parse.unquote(crm.path.lstrip("/"))
    tracker_db = env["TRACKER_DB"]
    names = [crm_db, tracker_db] if (env["TRACKER_HOST"], env["TRACKER_PORT"]) == (crm.hostname, str(crm.port or 5432)) \
        else [crm_db]
    create_missing_databases(env["DATABASE_URL"], names)
    # A tracker database on another server is created by Rasa itself (login_db in endpoints.production.yml).


def embedded_plan(args, env: dict[str, str], rasa_cmd, app_py: str, broker: list[str] | None) -> Plan:  # type: ignore[no-untyped-def]
    """One process of each kind, on the ports given on the command line."""
    processes = [Process("broker", broker)] if broker else []
    processes += [
        Process("worker", [app_py, "-m", "device_hooks.worker"]),
        Process("actions", [app_py, "-m", "actions"], {"ACTION_SERVER_PORT": str(args.actions_port)}),
        Process("rasa", rasa_cmd(args.rasa_port, "bot/endpoints.yml")),
        Process("web", web_cmd(app_py, args.web_port)),
    ]
    rasa = f"http://127.0.0.1:{args.rasa_port}"
    return Plan(processes, [f"http://127.0.0.1:{args.actions_port}/health", f"http://127.0.0.1:{args.web_port}/health",
                            f"{rasa}/status"], [rasa])


def production_plan(args, env: dict[str, str], rasa_cmd, app_py: str, broker: list[str] | None,  # type: ignore[no-untyped-def]
                    config_dir: pathlib.Path) -> Plan:
    """Two Rasa servers, two action servers, two web replicas and two workers behind HAProxy."""
    haproxy = _which("haproxy", "/usr/sbin/haproxy")
    if haproxy is None:
        raise SystemExit("haproxy is not installed: run `make setup` (it installs Debian's haproxy)")
    ports = {f"{kind}-{i}": free_port() for kind in ("rasa", "actions", "web") for i in range(1, REPLICAS + 1)}
    config_dir.mkdir(parents=True, exist_ok=True)
    cfg = config_dir / "haproxy.cfg"
    # Devices post their token with every HTTP message: HTTPS for them, with the server certificate of the
    # project's CA (scripts/run_stack.py made it before this plan).
    web_tls = (args.web_tls_port, str(pathlib.Path(env["DEVICE_PKI_DIR"]) / "server.pem"))
    cfg.write_text(haproxy_config(args.rasa_port, args.actions_port, args.web_port, ports, web_tls=web_tls))
    processes = [Process("broker", broker)] if broker else []
    processes.append(Process("haproxy", [haproxy, "-W", "-db", "-f", str(cfg)]))
    for i in range(1, REPLICAS + 1):
        processes.append(Process(f"worker-{i}", [app_py, "-m", "device_hooks.worker"],
                                 {"MQTT_CLIENT_ID": f"crm-device-worker-{i}", "MQTT_SHARE_GROUP": env["MQTT_SHARE_GROUP"]}))
    for i in range(1, REPLICAS + 1):
        processes.append(Process(f"actions-{i}", [app_py, "-m", "actions"], {"ACTION_SERVER_PORT": str(ports[f"actions-{i}"])}))
    for i in range(1, REPLICAS + 1):
        processes.append(Process(f"rasa-{i}", rasa_cmd(ports[f"rasa-{i}"], "bot/endpoints.production.yml")))
    for i in range(1, REPLICAS + 1):
        processes.append(Process(f"web-{i}", web_cmd(app_py, ports[f"web-{i}"])))
    instances = [f"http://127.0.0.1:{ports[f'rasa-{i}']}" for i in range(1, REPLICAS + 1)]
    ready = [f"http://127.0.0.1:{ports[f'{kind}-{i}']}/health" for kind in ("actions", "web") for i in range(1, REPLICAS + 1)]
    ready += [f"{url}/status" for url in instances]
    # Through the load balancer too: HAProxy has seen every backend healthy.
    ready += [f"http://127.0.0.1:{args.actions_port}/health", f"http://127.0.0.1:{args.web_port}/health",
              f"http://127.0.0.1:{args.rasa_port}/", f"https://127.0.0.1:{args.web_tls_port}/health"]
    return Plan(processes, ready, instances)


def web_cmd(app_py: str, port: int) -> list[str]:
    return [app_py, "-m", "uvicorn", "--factory", "web_service.main:create_app", "--host", "127.0.0.1",
            "--port", str(port), "--ws", "none"]


def haproxy_config(rasa_port: int, actions_port: int, web_port: int, ports: dict[str, int], host: str = "127.0.0.1",
                   backend_host: str = "127.0.0.1", web_tls: tuple[int, str] | None = None) -> str:
    """HAProxy configuration: one frontend per service, health-checked backends, sticky socket.io.

    ``web_tls``: (port, PEM with certificate and key) of an HTTPS frontend for the web service; with it the plain
    web frontend refuses device ingestion (403), so a device token is only ever sent encrypted."""
    def servers(kind: str, sticky: bool) -> str:
        return "".join(f"  server {name} {backend_host}:{port} check{' cookie ' + name if sticky else ''}\n"
                       for name, port in ports.items() if name.startswith(kind + "-"))

    return f"""# Generated by scripts/run_stack.py --topology production; deploy/haproxy.cfg is the same for containers.
global
  log stdout format raw local0 notice
  maxconn 4096

defaults
  mode http
  log global
  option httplog
  option dontlognull
  # The customer's address for the chat's per-client limits (rasa_channels.guard.client_address).
  option forwardfor
  # A request to a server that refuses the connection (just killed, not yet marked down) goes to another
  # at once (redispatch on every retry: a dead server does not come back within a second).
  option redispatch 1
  retries 3
  # A server killed with the request in its accept queue closes it unanswered ("empty response", a 502):
  # such a request is sent again, to another server, when repeating it is safe: a read, or a send that
  # carries an Idempotency-Key (the console's replies), which the web service stores once. Anything else
  # (a customer's chat message, a claim) gets the 502 rather than risk doing it twice.
  # (disable-l7-retry in each backend.) A retry needs the whole request at hand: the body is read first.
  retry-on conn-failure empty-response
  option http-buffer-request
  timeout connect 2s
  timeout client 120s
  timeout server 120s
  timeout tunnel 1h
  timeout http-request 30s
  # A Rasa server answers nothing while its event loop runs the model (seconds on a busy machine): a slow
  # check is not a dead server. A killed one refuses at once (redispatch) and is out after 3 checks.
  timeout check 5s
  default-server inter 2s fall 3 rise 2

# Rasa: REST and Messenger webhooks, the HTTP API, socket.io. The cookie keeps a socket.io client on one
# server, as the polling transport needs; any server can emit to any socket (Redis client manager).
frontend rasa
  bind {host}:{rasa_port}
  default_backend rasa
backend rasa
  http-request disable-l7-retry unless {{ method GET HEAD OPTIONS }} || {{ req.hdr(Idempotency-Key) -m found }}
  # A chat turn's request stays open until the turn is answered, and turns differ in cost (a greeting makes two
  # action calls, small talk none): the server with the fewest turns in progress takes the next one, rather than
  # the next in turn whose queue may be the longer. A socket.io client's cookie still keeps it on its server.
  balance leastconn
  cookie RASA_SERVER insert indirect nocache httponly
  option httpchk GET /
  http-check expect status 200
{servers("rasa", True)}
frontend actions
  bind {host}:{actions_port}
  default_backend actions
backend actions
  http-request disable-l7-retry unless {{ method GET HEAD OPTIONS }} || {{ req.hdr(Idempotency-Key) -m found }}
  # Action calls differ in cost too (a ticket's form closing against a greeting): the least busy server.
  balance leastconn
  option httpchk GET /health
  http-check expect status 200
{servers("actions", False)}
frontend web
  bind {host}:{web_port}
{_plain_web_rules(web_tls)}  default_backend web
backend web
  http-request disable-l7-retry unless {{ method GET HEAD OPTIONS }} || {{ req.hdr(Idempotency-Key) -m found }}
  balance roundrobin
  option httpchk GET /health
  http-check expect status 200
{servers("web", False)}{_tls_web_frontend(host, web_tls)}"""


# What a device gets on the plain frontend: it must use HTTPS (the body has the shape of the route's own errors).
TLS_REQUIRED = '{"reason": "tls_required", "message": "devices must post over HTTPS"}'


def _plain_web_rules(web_tls: tuple[int, str] | None) -> str:
    if web_tls is None:
        return ""
    # The path as the web service routes it (uvicorn percent-decodes it once, as url_dec does), so an encoded
    # spelling of the route is refused too.
    return (f"  # Device ingestion only over HTTPS (frontend web_tls, port {web_tls[0]}): a device posting its token\n"
            "  # here is refused, so none can keep working with its token sent in clear.\n"
            "  acl device_ingest path,url_dec -m beg /api/ingest/devices/\n"
            f"  http-request deny deny_status 403 content-type application/json string '{TLS_REQUIRED}' if device_ingest\n")


def _tls_web_frontend(host: str, web_tls: tuple[int, str] | None) -> str:
    if web_tls is None:
        return ""
    port, pem = web_tls
    return f"""
# The web service over HTTPS (certificate of the project's CA): devices post here; staff may use it too.
frontend web_tls
  bind {host}:{port} ssl crt {pem} ssl-min-ver TLSv1.2
  default_backend web
"""


def _which(name: str, fallback: str) -> str | None:
    import shutil

    found = shutil.which(name)
    return found or (fallback if pathlib.Path(fallback).exists() else None)
