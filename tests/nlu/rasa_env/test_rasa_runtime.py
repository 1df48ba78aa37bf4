"""nlu.rasa_runtime: Rasa accepts and refuses action server responses exactly as before (its speed is measured by
`make bench-chat`, not here)."""

from __future__ import annotations

import asyncio

import jsonschema
import pytest

import nlu  # noqa: F401 - importing the package applies the speed-ups, as Rasa's component loading does
from rasa.core.actions.action import RemoteAction

GOOD = {
    "events": [{"event": "slot", "name": "customer_id", "value": 1.0, "timestamp": None}],
    "responses": [{"text": "Thank you, Anna, I've found your account.", "buttons": []}],
}
BAD = [
    {"events": "not a list", "responses": []},
    {"events": [{"event": "no_such_event"}], "responses": []},
    {"events": [{"event": "slot"}], "responses": []},  # a slot event without a name
    {"events": [], "responses": ["not an object"]},
]


def original(result: dict) -> str | None:
    """What Rasa 3.6's own check (jsonschema.validate on the response schema) says: None or the message."""
    try:
        jsonschema.validate(result, RemoteAction.action_response_format_spec())
        return None
    except jsonschema.ValidationError as err:
        return err.message


def test_the_rasa_process_uses_the_reused_validator():
    assert RemoteAction._validate_action_result.__module__ == "nlu.rasa_runtime"


def test_valid_responses_are_accepted():
    action = RemoteAction("action_greet", None)
    assert original(GOOD) is None
    assert action._validate_action_result(GOOD) is True
    assert action._validate_action_result({}) is True


@pytest.mark.parametrize("result", BAD)
def test_invalid_responses_are_refused_with_the_same_error(result: dict):
    expected = original(result)
    assert expected is not None
    with pytest.raises(jsonschema.ValidationError) as err:
        RemoteAction("action_greet", None)._validate_action_result(result)
    assert err.value.message.startswith(expected + ". Failed to validate Action server response from API")



ODD_VALUES = [None, True, 0, -3, 1.5, "x", "ü", [], [{}], {}, {"a": 1}, {"ü": {}}]


def _plausible(node: dict):
    """A value of the first type a schema node allows (its const, if it has one)."""
    if "const" in node:
        return node["const"]
    kind = node.get("type", "string")
    kind = kind[0] if isinstance(kind, list) else kind
    return {"string": "text", "number": 0.5, "integer": 3, "boolean": True, "array": [], "object": {},
            "null": None}[kind]


def _responses_to_compare() -> list:
    """For each event type of Rasa's response schema, a plausible event and every variant made by dropping one of
    its fields or giving it an odd value (one level into nested objects too), plus odd top-level shapes."""
    schema = RemoteAction.action_response_format_spec()
    event_schema = schema["properties"]["events"]["items"]
    events = []
    for branch in event_schema["oneOf"]:
        props = {**event_schema["properties"], **branch.get("properties", {})}
        base = {name: _plausible(node) for name, node in props.items()}
        events.append(base)
        for name in base:
            events.append({k: v for k, v in base.items() if k != name})
            events += [{**base, name: odd} for odd in ODD_VALUES]
            nested = props[name].get("properties")
            if nested:
                inner = {k: _plausible(v) for k, v in nested.items()}
                events += [{**base, name: {**inner, key: odd}} for key in inner for odd in ODD_VALUES]
        user = {**base, "event": "user", "parse_data": {"response_selector": {
            "faq": {"response": {"responses": [{"text": "x"}]}}, "ü": {"ranking": "no"}, "a/b": {"response": 3}}}}
        events.append(user)
    events += [{"event": "no_such_event"}, {"event": 5}, {}, "slot", None]
    responses = [{"events": [event], "responses": []} for event in events]
    responses += [{"events": odd} for odd in ODD_VALUES] + [{"responses": odd} for odd in ODD_VALUES]
    responses += [{"events": [], "responses": [odd]} for odd in ODD_VALUES] + [{}, {"extra": 1}]
    return responses


def test_the_fast_check_accepts_no_response_that_jsonschema_refuses():
    """The compiled validator decides alone only what it accepts; over every event type and ~1,200 variants of odd
    fields it must accept exactly what Rasa's own jsonschema check accepts."""
    import jsonschema_rs
    from jsonschema.validators import validator_for

    schema = RemoteAction.action_response_format_spec()
    python = validator_for(schema)(schema)
    compiled = getattr(jsonschema_rs, type(python).__name__)(schema)
    cases = _responses_to_compare()
    assert len(cases) > 1000
    differ = [case for case in cases if compiled.is_valid(case) != python.is_valid(case)]
    assert differ == [], differ[:5]
    accepted = sum(python.is_valid(case) for case in cases)
    assert 100 < accepted < len(cases) - 100  # both kinds are well represented
    action = RemoteAction("action_greet", None)
    for case in cases[:300]:  # and the patched check decides as Rasa's own
        if original(case) is None:
            assert action._validate_action_result(case) is True
        else:
            with pytest.raises(jsonschema.ValidationError):
                action._validate_action_result(case)


def test_the_sqlite_tracker_store_writes_ahead_and_keeps_every_turn(tmp_path):
    import sqlite3

    from rasa.core.tracker_store import SQLTrackerStore
    from rasa.shared.core.domain import Domain
    from rasa.shared.core.events import ActionExecuted, UserUttered
    from rasa.shared.core.trackers import DialogueStateTracker

    store = SQLTrackerStore(Domain.empty(), dialect="sqlite", db=str(tmp_path / "tracker.db"))
    tracker = DialogueStateTracker("customer-1", slots=[])
    for turn in range(3):
        tracker.update(UserUttered(f"hello {turn}", {"name": "greet", "confidence": 1.0}))
        tracker.update(ActionExecuted("action_listen"))
        asyncio.run(store.save(tracker))
    stored = asyncio.run(store.retrieve("customer-1"))
    assert [e.text for e in stored.events if isinstance(e, UserUttered)] == ["hello 0", "hello 1", "hello 2"]
    with sqlite3.connect(tmp_path / "tracker.db") as plain:
        assert plain.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # stored in the file itself


def lock_store(kind: str):
    """One of Rasa's two lock stores: in memory (the default topology) or Redis (production, the local Redis)."""
    import secrets

    from rasa.core.lock_store import InMemoryLockStore, RedisLockStore

    if kind == "in_memory":
        return InMemoryLockStore()
    return RedisLockStore(host="127.0.0.1", port=6379, db=0, key_prefix="t" + secrets.token_hex(6))


@pytest.mark.parametrize("kind", ["in_memory", "redis"])
def test_a_busy_conversation_is_polled_soon_then_less_often(kind: str, monkeypatch: pytest.MonkeyPatch):
    from nlu.rasa_runtime import LOCK_FIRST_POLL_SECONDS, LOCK_LONGEST_POLL_SECONDS

    store = lock_store(kind)
    real_sleep, waits, order = asyncio.sleep, [], []

    async def sleep(seconds: float) -> None:  # records the waiter's pauses, then yields without waiting
        waits.append(seconds)
        await real_sleep(0)

    async def holder() -> None:
        async with store.lock("conversation-1"):
            while len(waits) < 7:  # busy until the waiter has polled seven times
                await real_sleep(0)
            order.append("holder")

    async def waiter() -> None:
        await real_sleep(0)  # takes its ticket after the holder's
        async with store.lock("conversation-1"):
            order.append("waiter")

    async def both() -> None:
        await asyncio.gather(holder(), waiter())

    monkeypatch.setattr(asyncio, "sleep", sleep)
    asyncio.run(both())
    assert order == ["holder", "waiter"]
    assert waits[:5] == [LOCK_FIRST_POLL_SECONDS, 0.04, 0.08, 0.16, LOCK_LONGEST_POLL_SECONDS]
    assert set(waits[4:]) == {LOCK_LONGEST_POLL_SECONDS}  # never longer: Rasa's own 1 s wait was the whole delay
    assert store.get_lock("conversation-1") is None  # released: the next message takes it at once


@pytest.mark.parametrize("kind", ["in_memory", "redis"])
def test_racing_messages_of_one_conversation_are_handled_one_at_a_time_in_order(kind: str):
    store = lock_store(kind)
    inside, log = [], []

    async def message(n: int) -> None:
        async with store.lock("conversation-2"):
            inside.append(n)
            assert inside == [n]  # nobody else holds the conversation
            await asyncio.sleep(0.01)  # a turn's work, so the others queue behind it
            log.append(n)
            inside.remove(n)

    async def race() -> None:
        tasks = []
        for n in range(6):
            tasks.append(asyncio.ensure_future(message(n)))  # tickets are issued in this order
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)

    asyncio.run(race())
    assert log == list(range(6))


def test_the_faq_selector_answers_messages_classified_as_faq_and_leaves_the_others(tmp_path):
    from rasa.engine.graph import ExecutionContext, GraphSchema
    from rasa.engine.storage.local_model_storage import LocalModelStorage
    from rasa.engine.storage.resource import Resource
    from rasa.nlu.featurizers.sparse_featurizer.count_vectors_featurizer import CountVectorsFeaturizer
    from rasa.nlu.selectors.response_selector import ResponseSelector
    from rasa.nlu.tokenizers.whitespace_tokenizer import WhitespaceTokenizer
    from rasa.shared.nlu.training_data.message import Message
    from rasa.shared.nlu.training_data.training_data import TrainingData

    storage, context = LocalModelStorage(tmp_path), ExecutionContext(GraphSchema({}), node_name="node")
    questions = {"warranty": ["how long is the warranty", "warranty period", "is it under warranty"],
                 "delivery": ["when is delivery", "delivery time", "how fast do you deliver"]}
    data = TrainingData(
        [Message.build(text=t, intent="faq", intent_response_key=f"faq/{k}") for k, texts in questions.items() for t in texts]
        + [Message.build(text=t, intent="greet") for t in ("hello", "hi there")],
        responses={"utter_faq/warranty": [{"text": "Two years."}], "utter_faq/delivery": [{"text": "Three days."}]})
    tokenizer = WhitespaceTokenizer(WhitespaceTokenizer.get_default_config())
    featurizer = CountVectorsFeaturizer.create(CountVectorsFeaturizer.get_default_config(), storage, Resource("cv"), context)
    tokenizer.process_training_data(data)
    featurizer.train(data)
    featurizer.process_training_data(data)
    selector = ResponseSelector.create({**ResponseSelector.get_default_config(), "retrieval_intent": "faq", "epochs": 2},
                                       storage, Resource("rs"), context)
    selector.train(data)

    faq, greeting = Message.build(text="warranty period"), Message.build(text="hello")
    faq.set("intent", {"name": "faq", "confidence": 0.9})
    greeting.set("intent", {"name": "greet", "confidence": 0.9})
    for message in (faq, greeting):
        tokenizer.process([message])
        featurizer.process([message])
    assert selector.process([greeting, faq]) == [greeting, faq]  # the same messages, in order
    answer = faq.get("response_selector")["faq"]["response"]
    assert answer["utter_action"].startswith("utter_faq/") and answer["responses"][0]["text"] in ("Two years.", "Three days.")
    assert greeting.get("response_selector") is None  # not a product question: no selection run for it


def test_event_classes_are_found_by_name_as_rasa_finds_them():
    import rasa.shared.utils.common
    from rasa.shared.core.events import Event, SlotSet

    assert Event.resolve_by_type.__module__ == "nlu.rasa_runtime"  # the remembering lookup is the one in use
    every = rasa.shared.utils.common.all_subclasses(Event)
    for cls in every:
        first = next(c for c in every if c.type_name == cls.type_name)  # Rasa's rule: the first subclass by that name
        assert Event.resolve_by_type(cls.type_name) is first
        assert Event.resolve_by_type(cls.type_name) is first  # and again, from what was remembered
    assert Event.resolve_by_type("topic") is None
    assert Event.resolve_by_type("no_such_event", default=SlotSet) is SlotSet
    with pytest.raises(ValueError, match="Unknown event name 'no_such_event'"):
        Event.resolve_by_type("no_such_event")
    restored = Event.from_parameters({"event": "slot", "name": "customer_id", "value": 7})
    assert isinstance(restored, SlotSet) and restored.value == 7


@pytest.mark.parametrize("kind", ["in_memory", "redis"])
def test_a_waiter_writes_the_lock_only_to_drop_a_dead_holders_ticket(kind: str, monkeypatch: pytest.MonkeyPatch):
    store = lock_store(kind)
    saves, rasa_save = [], store.save_lock

    def save_lock(lock):  # counts the writes, then writes
        saves.append([t.number for t in lock.tickets])
        rasa_save(lock)

    store.save_lock = save_lock
    polled = []

    async def busy_holder_then_waiter() -> None:
        async def holder() -> None:
            async with store.lock("conversation-3"):
                while len(polled) < 3:  # holds while the waiter polls a few times
                    await asyncio.sleep(0.01)
                    polled.append(len(saves))

        async def waiter() -> None:
            await asyncio.sleep(0)
            async with store.lock("conversation-3"):
                pass

        await asyncio.gather(holder(), waiter())

    asyncio.run(busy_holder_then_waiter())
    # Two tickets issued, then nothing written while the waiter polled a live holder (a write there could
    # overwrite another server's ticket), then the holder's and the waiter's finishes.
    assert polled == [2, 2, 2]

    # A holder that died (its ticket never finished) blocks the conversation until its ticket expires; the
    # waiter then takes the lock and writes the lock without the dead ticket. The tickets' clock is held still
    # and moved past the dead ticket's expiry only once the waiter has found the conversation busy: with the
    # real clock a slow machine could let the ticket expire before the waiter's first look.
    import rasa.core.lock

    clock = [1_000_000.0]
    monkeypatch.setattr(rasa.core.lock, "time", type("Clock", (), {"time": staticmethod(lambda: clock[0])}))
    saves.clear()
    store.issue_ticket("conversation-4", lock_lifetime=0.15)

    async def after_the_dead_holder() -> list:
        async def waiter() -> list:
            async with store.lock("conversation-4") as lock:
                return [t.number for t in store.get_lock("conversation-4").tickets] + [lock.now_serving]

        async def expire_the_dead_ticket() -> None:
            while len(saves) < 2:  # the waiter's ticket is written, and it has found the dead one live
                await asyncio.sleep(0)
            clock[0] += 1.0

        served, _ = await asyncio.gather(waiter(), expire_the_dead_ticket())
        return served

    tickets_then_serving = asyncio.run(after_the_dead_holder())
    assert tickets_then_serving == [1, 1]  # only the waiter's ticket left, and it is served
    # Written: the dead holder's ticket, the waiter's, the lock without the expired one, the waiter's finish.
    assert saves == [[0], [0, 1], [1], []]


def test_the_projects_model_graph_validates_with_the_speed_ups_applied():
    """`rasa train` and model loading resolve every graph component's type hints first; a patched method whose
    hints do not resolve stops training (it did: the selector's `process`), so validate the real config here."""
    import pathlib

    from rasa.engine import validation
    from rasa.engine.recipes.recipe import Recipe
    from rasa.shared.data import TrainingType
    from rasa.shared.importers.importer import TrainingDataImporter

    root = pathlib.Path(__file__).resolve().parents[3]
    importer = TrainingDataImporter.load_from_config(
        str(root / "config.yml"), str(root / "bot" / "domain.yml"), [str(root / "bot" / "data"), str(root / "nlu" / "data")])
    config = importer.get_config()
    graph = Recipe.recipe_for_name(config.get("recipe")).graph_config_for_recipe(
        config, {}, training_type=TrainingType.BOTH, is_finetuning=False)
    validation.validate(graph)  # raises GraphSchemaValidationException on an unresolvable hint
    from rasa.nlu.selectors.response_selector import ResponseSelector
    assert ResponseSelector.process.__module__ == "rasa.nlu.selectors.response_selector"  # Rasa's signature, kept
    assert ResponseSelector.process.__code__.co_filename.endswith("rasa_runtime.py")  # ... on the patched method


class _ModelPart:
    """A stand-in for the Python objects a loaded model consists of."""

    def __init__(self, before: "_ModelPart | None" = None) -> None:
        self.before = before


def test_what_a_model_load_leaves_alive_is_kept_out_of_garbage_collection(monkeypatch):
    """The server's model load (Rasa's load_agent_on_start, which serve_application starts the server with) freezes
    what is alive once the model is loaded, so no later collection walks the model's objects; garbage the load left
    behind is collected first, not frozen for ever."""
    import gc
    import types
    import weakref

    import rasa.core.run as rasa_run

    assert rasa_run.load_agent_on_start.__module__ == "nlu.rasa_runtime"
    left_behind: list = []

    async def load_agent(**_kwargs):
        model = [_ModelPart()]
        for _ in range(30_000):
            model.append(_ModelPart(model[-1]))
        cycle = _ModelPart()
        cycle.before = cycle  # a reference cycle nobody holds: only a collection frees it
        left_behind.append(weakref.ref(cycle))
        return model

    monkeypatch.setattr(rasa_run.agent, "load_agent", load_agent)
    app = types.SimpleNamespace(ctx=types.SimpleNamespace())
    gc.unfreeze()  # this test process froze nothing before: start from Python's default
    was_enabled = gc.isenabled()
    try:
        gc.disable()  # no automatic collection between the load and the checks
        loaded = asyncio.run(rasa_run.load_agent_on_start("model.tar.gz", None, None, app, None))
        assert app.ctx.agent is loaded
        assert left_behind[0]() is None  # the cycle was collected before the freeze
        assert gc.get_freeze_count() > len(loaded)
        walked = {id(obj) for obj in gc.get_objects()}  # what a full collection would walk
        assert not any(id(part) in walked for part in loaded)
        # Without the freeze the same objects are walked again (the assertion above can fail).
        gc.unfreeze()
        walked = {id(obj) for obj in gc.get_objects()}
        assert all(id(part) in walked for part in loaded)
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()
