"""One authorisation rule for every handoff route (web_service.handoff_access), as a generated matrix:
every route of the OpenAPI schema that acts on one handoff × role × skills × assignment, on SQLite and
PostgreSQL, each cell on a conversation of its own. The expected codes are the README's table, written out
here independently of the implementation."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid

from sqlalchemy import select

from crm_store.db import session_scope
from crm_store.enums import ApplianceCategory, HandoffReason, HandoffStatus, TicketPriority
from crm_store.models import User, utcnow
from crm_store.repositories.console import add_attachment
from crm_store.repositories.handoffs import claim_handoff, create_handoff, get_handoff
from tests.web_service.conftest import login
from web_service.handoff_access import ROUTES, Action

ACTORS = {"agent": "boiler_de", "supervisor": "super1", "admin": "admin1"}  # boiler_de: boiler and German only
STATES = ("queued", "callback", "mine", "other")
SKILLS = {"match": (ApplianceCategory.BOILER, "de"), "mismatch": (ApplianceCategory.FRIDGE, "en")}
BODIES = {Action.NOTE: {"body": "checked the pressure"}, Action.REPLY: {"body": "Hello"}, Action.CLOSE: {}}
OK = {"get": 200, Action.NOTE: 201, Action.CLAIM: 200, Action.REPLY: 201, Action.CLOSE: 200}
ROUTE_OK = {("post", "/api/handoffs/{handoff_id}/typing"): 204}
PHOTO = b"\x89PNG\r\n\x1a\n" + b"0" * 64


def expected(role: str, action: Action, method: str, path: str, state: str, skills: str) -> int:
    supervising, mine, unassigned = role != "agent", state == "mine", state in ("queued", "callback")
    ok = ROUTE_OK.get((method, path)) or (OK["get"] if method == "get" else OK[action])
    if action in (Action.READ, Action.NOTE):
        return ok if supervising or mine or (unassigned and skills == "match") else 403
    if action is Action.CLAIM:
        if not supervising and skills != "match":
            return 403
        return 409 if state == "other" else ok
    if action is Action.REPLY:
        return ok if mine else 409
    if supervising:  # close
        return ok
    if state == "callback":
        return ok if skills == "match" else 403
    return ok if mine else 409


def handoff_in(url: str, state: str, skills: str, actor: str) -> int:
    category, language = SKILLS[skills]
    with session_scope(url) as s:
        handoff, _ = create_handoff(
            s, conversation_id=f"authz-{uuid.uuid4().hex[:10]}", channel="socketio", customer_id=2, ticket_id=None,
            reason=HandoffReason.CUSTOMER_REQUEST, trigger_key="customer_request", priority=TicketPriority.NORMAL,
            language=language, category=category, summary="test", packet={"transcript": []},
            first_response_due_at=utcnow() + dt.timedelta(minutes=15),
            status=HandoffStatus.CALLBACK if state == "callback" else HandoffStatus.QUEUED)
        if state in ("mine", "other"):
            owner = s.scalar(select(User).where(User.username == (actor if state == "mine" else "agent1")))
            claim_handoff(s, handoff=handoff, user=owner)
        return handoff.id


def photo_of(url: str, handoff_id: int) -> int:
    with session_scope(url) as s:
        handoff = get_handoff(s, handoff_id=handoff_id)
        return add_attachment(s, conversation_id=handoff.conversation_id, handoff=handoff, ticket=None,
                              filename="seal.png", content_type="image/png", data=PHOTO).id


def test_every_handoff_route_has_a_rule(client):
    paths = client.app.openapi()["paths"]
    routes = {(method, path) for path, item in paths.items() if path.startswith("/api/handoffs/{handoff_id}")
              for method in item}
    assert routes == set(ROUTES), routes ^ set(ROUTES)


def test_no_route_takes_a_conversations_or_photos_id_outside_the_handoff_routes(client):
    """A route that acts on one conversation but names it elsewhere (a body field, another path) would escape the
    matrix below: /api/attachments/{id} served any conversation's photo to any agent, /api/console/typing showed
    "<name> is typing" in any chat."""
    schema = client.app.openapi()
    components = schema.get("components", {}).get("schemas", {})
    outside = []
    for path, item in schema["paths"].items():
        if path.startswith("/api/handoffs/{handoff_id}"):
            continue
        for method, op in item.items():
            names = {p["name"] for p in op.get("parameters", [])}
            ref = (op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {}).get("$ref", ""))
            names |= set(components.get(ref.rsplit("/", 1)[-1], {}).get("properties", {})) if ref else set()
            if names & {"handoff_id", "attachment_id"}:
                outside.append((method, path, sorted(names)))
    assert not outside, outside


def test_role_skills_and_assignment_decide_every_handoff_route(client, api_db):
    headers = {role: login(client, name) for role, name in ACTORS.items()}
    failures, cells = [], 0
    for (method, path), role, state, skills in itertools.product(sorted(ROUTES, key=str), ACTORS, STATES, SKILLS):
        action = ROUTES[(method, path)]
        handoff_id = handoff_in(api_db, state, skills, ACTORS[role])
        url = path.replace("{handoff_id}", str(handoff_id))
        if "{attachment_id}" in url:
            url = url.replace("{attachment_id}", str(photo_of(api_db, handoff_id)))
        resp = client.request(method.upper(), url, headers=headers[role], json=BODIES.get(action) if method == "post" else None)
        cells += 1
        want = expected(role, action, method, path, state, skills)
        if resp.status_code != want:
            failures.append((method, path, role, state, skills, resp.status_code, want))
        elif action is Action.CLOSE and want == 200:
            with session_scope(api_db) as s:  # it really closed
                assert get_handoff(s, handoff_id=handoff_id).status in (HandoffStatus.RESOLVED, HandoffStatus.HANDED_BACK)
    assert cells == len(ROUTES) * len(ACTORS) * len(STATES) * len(SKILLS)
    assert not failures, failures


def test_search_shows_an_agent_only_conversations_they_may_read(client, api_db):
    other = handoff_in(api_db, "other", "match", "boiler_de")
    agent = login(client, "boiler_de")
    with session_scope(api_db) as s:
        handoff = get_handoff(s, handoff_id=other)
        query = handoff.conversation_id
    found = {h["id"] for h in client.post("/api/console/search", json={"q": query}, headers=agent).json()}
    assert other not in found
    found = {h["id"] for h in client.post("/api/console/search", json={"q": query}, headers=login(client, "super1")).json()}
    assert other in found
