"""The chat benchmark finds a stack's processes by role from the supervisor's children.json, two of a role on the
production topology, so it can report the cores each role used; and its headline p95 ratio is the median of
back-to-back product/bare rounds."""

from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "bench"))
spec = importlib.util.spec_from_file_location("bench_chat", ROOT / "bench" / "bench_chat.py")
bench_chat = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_chat)

IDLE = "import sys; sys.stdin.read()"  # a child that lives until its stdin closes


def test_children_are_grouped_by_role_and_a_balancers_worker_is_counted(tmp_path):
    # A stand-in supervisor starting children named as run_stack.py names them: two Rasa servers, two action
    # servers, a web replica, a process of no reported role, and a "haproxy" that has a worker of its own.
    supervisor = subprocess.Popen([sys.executable, "-c", f"""
import json, subprocess, sys
idle = [sys.executable, "-c", {IDLE!r}]
names = ["rasa-1", "rasa-2", "actions-1", "actions-2", "web", "simulator"]
kids = [subprocess.Popen(idle, stdin=subprocess.PIPE) for _ in names]
kids.append(subprocess.Popen([sys.executable, "-c", "import subprocess, sys; "
    "w = subprocess.Popen([sys.executable, '-c', {IDLE!r}], stdin=subprocess.PIPE); print(w.pid, flush=True); "
    "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
names.append("haproxy")
print(kids[-1].stdout.readline().strip(), flush=True)  # the balancer's worker, started
print(json.dumps(dict(zip(names, (k.pid for k in kids)))), flush=True)  # what run_stack.py writes
sys.stdin.read()
"""], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        worker = int(supervisor.stdout.readline())
        children = tmp_path / "children.json"
        children.write_text(supervisor.stdout.readline())
        found = bench_chat.stack_processes(children)
        assert {role: len(pids) for role, pids in found.items()} == {"rasa": 2, "actions": 2, "web": 1, "balancer": 2}
        assert worker in found["balancer"]
        assert all(bench_chat.cpu_seconds(pid) >= 0 for pids in found.values() for pid in pids)
    finally:
        supervisor.stdin.close()  # every process here ends when its stdin closes: the whole tree goes
        supervisor.wait(timeout=30)


def summary(p50: float, p95: float, p99: float) -> dict:
    return {"p50_ms": p50, "p95_ms": p95, "p99_ms": p99}


def test_the_headline_ratio_is_the_median_of_each_rounds_own_ratio():
    level = {"rounds": [
        {"product": summary(500, 1000, 1200), "bare_rasa": summary(400, 800, 900)},    # 1.25
        {"product": summary(700, 1800, 2000), "bare_rasa": summary(600, 1000, 1100)},  # 1.8: a slow minute
        {"product": summary(450, 900, 950), "bare_rasa": summary(420, 750, 800)},      # 1.2
    ]}
    figures = bench_chat.paired_rounds(level)
    assert figures["p95_ratio_rounds_at_20"] == [1.25, 1.8, 1.2]
    # The median of the rounds' ratios; here it equals the ratio of the median p95s, the pairing below tells them apart.
    assert figures["p95_ratio_to_bare_rasa_at_20"] == 1.25
    assert (figures["p50_ms_at_20"], figures["p95_ms_at_20"], figures["p99_ms_at_20"]) == (500, 1000, 1200)
    assert figures["bare_rasa_p95_ms_at_20"] == 800
    # Pairs matter: the same p95s paired differently give other ratios and another median.
    swapped = {"rounds": [{"product": r["product"], "bare_rasa": b["bare_rasa"]}
                          for r, b in zip(level["rounds"], level["rounds"][1:] + level["rounds"][:1])]}
    assert bench_chat.paired_rounds(swapped)["p95_ratio_rounds_at_20"] == [1.0, 2.4, 1.12]
    assert bench_chat.paired_rounds(swapped)["p95_ratio_to_bare_rasa_at_20"] == 1.12


def test_one_round_or_no_bare_bot():
    one = bench_chat.paired_rounds({"product": summary(500, 1000, 1200), "bare_rasa": summary(400, 800, 900)})
    assert one["p95_ratio_rounds_at_20"] == [1.25] and one["p95_ratio_to_bare_rasa_at_20"] == 1.25
    assert one["p95_ms_at_20"] == 1000 and one["bare_rasa_p95_ms_at_20"] == 800
    alone = bench_chat.paired_rounds({"product": summary(500, 1000, 1200)})
    assert alone["p95_ratio_to_bare_rasa_at_20"] is None and alone["p95_ratio_rounds_at_20"] == []
    assert alone["p95_ms_at_20"] == 1000 and alone["bare_rasa_p95_ms_at_20"] is None
    assert bench_chat.paired_rounds({})["p95_ms_at_20"] is None


def test_the_bare_bots_script_keeps_to_its_training_data():
    """Every turn of the bare bot's script is a training example whose intent is a rule's or the next step of one
    of `rasa init`'s stories: a turn off them gets whatever TED generalises to, which differs between trainings
    (one of them answered "I am great" after a bot challenge with nothing, a failed turn in every round)."""
    import rasa.cli
    import yaml

    project = pathlib.Path(rasa.cli.__file__).parent / "initial_project" / "data"
    examples = {line.strip()[2:]: block["intent"] for block in yaml.safe_load((project / "nlu.yml").read_text())["nlu"]
                for line in block["examples"].splitlines() if line.strip()}
    rule_intents = {step["intent"] for rule in yaml.safe_load((project / "rules.yml").read_text())["rules"]
                    for step in rule["steps"] if "intent" in step}
    stories = [[step["intent"] for step in story["steps"] if "intent" in step]
               for story in yaml.safe_load((project / "stories.yml").read_text())["stories"]]
    history: list[str] = []
    for step in bench_chat.bare_script({}):
        assert step.message in examples, step.message
        intent = examples[step.message]
        if intent in rule_intents:
            continue
        history.append(intent)
        assert any(story[:len(history)] == history for story in stories), (step.message, history)
