"""nlu.turn_order: the customer turn that arrived first goes first whenever several are ready (the effect on
latency is measured by `make bench-chat`, not here)."""

from __future__ import annotations

import asyncio

import pytest

import nlu  # noqa: F401 - importing the package applies the Rasa runtime changes, as loading a model does
from nlu import turn_order
from nlu.turn_order import OldestFirstGate, Turn, gated, ungated


def test_the_rasa_process_gates_turns_and_ungates_endpoint_requests():
    from rasa.core.processor import MessageProcessor
    from rasa.utils.endpoints import EndpointConfig

    assert MessageProcessor.handle_message.__code__.co_filename == turn_order.__file__
    assert EndpointConfig.request.__code__.co_filename == turn_order.__file__
    assert MessageProcessor.handle_message.__wrapped__.__module__ == "rasa.core.processor"


def test_the_gate_goes_to_the_earliest_arrival_not_the_first_to_ask():
    gate, got = OldestFirstGate(), []

    async def wait(turn: Turn, name: str) -> None:
        await gate.acquire(turn)
        got.append(name)
        gate.release(turn)

    async def main() -> None:
        first, old, new = Turn(arrived=1.0), Turn(arrived=2.0), Turn(arrived=3.0)
        await gate.acquire(first)
        tasks = [asyncio.ensure_future(wait(new, "new"))]  # asks first
        await asyncio.sleep(0)
        tasks.append(asyncio.ensure_future(wait(old, "old")))  # asks second, arrived earlier
        await asyncio.sleep(0)
        assert gate.waiting == 2 and got == []
        gate.release(first)
        await asyncio.gather(*tasks)
        assert not first.holding and not old.holding and not new.holding
        assert gate.waiting == 0
        await asyncio.wait_for(gate.acquire(Turn()), 1)  # free again: taken at once

    asyncio.run(main())
    assert got == ["old", "new"]


@pytest.mark.parametrize("when", ["while waiting", "just handed over"])
def test_a_cancelled_waiter_never_keeps_the_gate(when: str):
    gate = OldestFirstGate()

    async def main() -> None:
        holder, doomed, next_one = Turn(arrived=1.0), Turn(arrived=2.0), Turn(arrived=3.0)
        await gate.acquire(holder)
        cancelled = asyncio.ensure_future(gate.acquire(doomed))
        waiting = asyncio.ensure_future(gate.acquire(next_one))
        await asyncio.sleep(0)
        if when == "while waiting":
            cancelled.cancel()
            await asyncio.sleep(0)
            gate.release(holder)
        else:
            gate.release(holder)  # handed to `doomed`, whose task is cancelled before it runs
            cancelled.cancel()
        await asyncio.wait_for(waiting, 1)  # the next turn gets it; nobody waits forever
        assert next_one.holding and not doomed.holding
        with pytest.raises(asyncio.CancelledError):
            await cancelled

    asyncio.run(main())


def test_a_turn_back_from_the_action_server_goes_before_turns_that_arrived_after_it():
    """Three turns, each: work, an action server call, work. The first turn's answer comes back while the second
    turn works and the third already waits for the gate: the first goes next (a plain lock would let the third
    go, an ungated loop would interleave all three), and the turns finish in the order they arrived."""
    log: list[str] = []

    async def main() -> None:
        answered = asyncio.Event()

        async def action_server(name: str) -> None:
            log.append(f"{name} calls")
            if name == "t1":
                await answered.wait()

        call = ungated(action_server)

        async def work(name: str, part: str) -> None:
            log.append(f"{name} {part}")
            if (name, part) == ("t2", "reads"):  # while t2 works, ...
                while turn_order.GATE.waiting < 1:  # ... t3 asks for the gate, ...
                    await asyncio.sleep(0)
                answered.set()  # ... then t1's answer arrives ...
                while turn_order.GATE.waiting < 2:  # ... and t1 asks for the gate after t3
                    await asyncio.sleep(0)
            for _ in range(3):  # the rest of the slice: an ungated loop would run other turns here
                await asyncio.sleep(0)
            log.append(f"{name} {part} done")

        @gated
        async def handle_message(name: str) -> None:
            await work(name, "reads")
            await call(name)
            await work(name, "answers")

        tasks = []
        for name in ("t1", "t2", "t3"):
            tasks.append(asyncio.ensure_future(handle_message(name)))
            await asyncio.sleep(0.001)  # distinct arrival times
        await asyncio.wait_for(asyncio.gather(*tasks), 5)

    asyncio.run(main())
    # No two turns' slices interleave: each slice runs from its start to its end.
    for i, entry in enumerate(log):
        if not entry.endswith(("done", "calls")):
            assert log[i + 1] == entry + " done", log
    assert log.index("t1 answers done") < log.index("t3 reads"), log
    assert [e.split()[0] for e in log if e.endswith("answers done")] == ["t1", "t2", "t3"]
    assert turn_order.GATE.waiting == 0 and turn_order._current.get() is None


def test_a_request_outside_a_turn_and_a_nested_turn_do_not_queue():
    seen: list[bool] = []

    async def request() -> str:
        return "ok"

    @gated
    async def inner() -> str:
        turn = turn_order._current.get()
        seen.append(bool(turn and turn.holding))
        return await ungated(request)()

    @gated
    async def outer() -> str:
        return await inner()  # a follow-up inside a turn: the same turn, already holding the gate

    async def main() -> None:
        assert await asyncio.wait_for(ungated(request)(), 1) == "ok"
        assert await asyncio.wait_for(outer(), 1) == "ok"

    asyncio.run(main())
    assert seen == [True]


def test_sending_the_bots_replies_gives_the_gate_back():
    """A slow send (Messenger's Graph API, a Redis publish) must not hold every other conversation."""
    from rasa.core.processor import MessageProcessor

    assert isinstance(MessageProcessor.__dict__["_send_bot_messages"], staticmethod)
    assert MessageProcessor._send_bot_messages.__code__.co_filename == turn_order.__file__
    done: list[str] = []

    async def main() -> None:
        send = ungated(asyncio.sleep)

        @gated
        async def messenger_turn() -> None:
            await send(0.3)  # Facebook answers slowly
            done.append("messenger")

        @gated
        async def web_turn() -> None:
            done.append("web")

        slow = asyncio.ensure_future(messenger_turn())
        await asyncio.sleep(0.01)
        await asyncio.wait_for(web_turn(), 0.2)  # not behind the Messenger reply
        await slow

    asyncio.run(main())
    assert done == ["web", "messenger"]


def test_a_task_started_during_a_turn_never_takes_the_gate_in_its_name():
    async def main() -> None:
        request_done = asyncio.Event()

        async def endpoint() -> None:
            await asyncio.sleep(0.05)
            request_done.set()

        @gated
        async def turn_that_schedules() -> None:
            # e.g. a reminder job: a task created here copies the context, current turn included
            asyncio.ensure_future(ungated(endpoint)())
            await asyncio.sleep(0)
            assert turn_order._current.get().holding  # the task did not release the turn's hold

        await turn_that_schedules()
        await asyncio.wait_for(request_done.wait(), 1)
        await asyncio.sleep(0)

        @gated
        async def later_turn() -> str:
            return "answered"

        assert await asyncio.wait_for(later_turn(), 1) == "answered"  # the gate was not left held
        assert turn_order.GATE.waiting == 0

    asyncio.run(main())
