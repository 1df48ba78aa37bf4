"""Scores a trained model on an NLU test file the way the bot sees its output: the final intent, the answer
picked for retrieval intents (faq/<topic>), and the entities left after every extractor ran (rule entities replace overlapping learned ones), matched exactly
by type and character span. Rasa's own `rasa test nlu` scores each extractor alone, which says little
once extractors are merged.

    .venv-rasa/bin/python scripts/eval_nlu.py MODEL nlu/test_data/nlu_test.yml  ->  JSON on stdout
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections import Counter


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("test_file")
    args = ap.parse_args(argv)

    from rasa.core.agent import Agent
    from rasa.shared.nlu.training_data.loading import load_data
    from rasa.utils.common import configure_logging_and_warnings

    from rasa.utils.log_utils import configure_structlog

    # Rasa logs every parsed message (with its text) at debug level to stdout: keep stdout for the JSON.
    configure_logging_and_warnings(logging.WARNING)
    configure_structlog(logging.WARNING)
    data = load_data(args.test_file)
    agent = Agent.load(args.model)
    loop = asyncio.new_event_loop()
    correct = 0
    tp, fp, fn = Counter(), Counter(), Counter()
    value_checked = value_right = 0
    faq_total = faq_right = 0
    errors = []
    for example in data.training_examples:
        text, gold_intent = example.get("text"), example.get("intent")
        parsed = loop.run_until_complete(agent.parse_message(text))
        predicted = (parsed.get("intent") or {}).get("name")
        correct += predicted == gold_intent
        # Retrieval intents (faq/<topic>): the answer ResponseSelector picked must be the topic's.
        gold_key = example.get("intent_response_key")
        if gold_key and "/" in gold_key:
            selector = (parsed.get("response_selector") or {}).get(gold_intent) or {}
            chosen = (selector.get("response") or {}).get("intent_response_key")
            faq_total += 1
            faq_right += predicted == gold_intent and chosen == gold_key
        gold = {(e["entity"], e["start"], e["end"]): e.get("value") for e in example.get("entities") or []}
        found = {(e["entity"], e["start"], e["end"]): e.get("value") for e in parsed.get("entities") or []}
        for key in gold.keys() | found.keys():
            kind = key[0]
            if key in gold and key in found:
                tp[kind] += 1
                # Annotated values are canonical where the test file says so ([ord 2021 000101]{"value": ...}).
                if gold[key] is not None:
                    value_checked += 1
                    value_right += str(found[key]).lower() == str(gold[key]).lower()
            elif key in found:
                fp[kind] += 1
            else:
                fn[kind] += 1
        if predicted != gold_intent or gold.keys() != found.keys():
            errors.append({"text": text, "intent": gold_intent, "predicted": predicted,
                           "missing": sorted(map(list, gold.keys() - found.keys())),
                           "extra": sorted(map(list, found.keys() - gold.keys()))})

    def f1(t: int, p: int, n: int) -> float:
        return 2 * t / (2 * t + p + n) if t else 0.0

    kinds = sorted(tp.keys() | fp.keys() | fn.keys())
    result = {
        "examples": len(data.training_examples),
        "intent_accuracy": round(correct / max(len(data.training_examples), 1), 4),
        "entity_micro_f1": round(f1(sum(tp.values()), sum(fp.values()), sum(fn.values())), 4),
        "entity_f1": {k: round(f1(tp[k], fp[k], fn[k]), 4) for k in kinds},
        "entity_value_accuracy": round(value_right / value_checked, 4) if value_checked else None,
        "faq_examples": faq_total,
        "faq_answer_accuracy": round(faq_right / faq_total, 4) if faq_total else None,
        "errors": errors,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
