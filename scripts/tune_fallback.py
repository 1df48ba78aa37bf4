"""Chooses the bot's FallbackClassifier threshold on validation data: k-fold cross-validation over the bot's
NLU training data (nlu/data), never the held-out test file.

Each fold trains the intent part of config.yml's pipeline (featurizers and the intent classifier; entity
extractors, the response selector and the fallback itself left out) with Rasa's real training, and parses the fold it did not
see. The threshold maximises the share of messages handled well: a confident right intent, or a fallback
where the intent would have been wrong (or the message was out of scope).

    .venv-rasa/bin/python scripts/tune_fallback.py [--folds 5]  ->  bench/results/fallback-threshold.json

The same cross-validation is the suite's guard on understanding (tests/bot: 3 folds, a floor on accuracy).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import pathlib
import random
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "fallback-threshold.json"
# A fallback on these is the right reply: the bot cannot help with them anyway.
DECLINE_INTENTS = {"out_of_scope"}
NOT_INTENT = {"DIETClassifier", "nlu.SpacyRuleEntityExtractor", "RegexEntityExtractor", "EntitySynonymMapper",
              "ResponseSelector", "FallbackClassifier"}


def handled_well(rows: list[tuple[str, float, str]], threshold: float) -> float:
    """Share of (predicted, confidence, gold) rows answered right, or declined where an answer would be wrong."""
    good = sum((p == g and c >= threshold) or (c < threshold and (p != g or g in DECLINE_INTENTS)) for p, c, g in rows)
    return good / len(rows)


def best_threshold(rows: list[tuple[str, float, str]]) -> tuple[float, float]:
    """(threshold, share handled well) over every candidate threshold; ties go to the lower threshold."""
    best = (0.0, -1.0)
    for t in sorted({0.0, *[c for _, c, _ in rows]}):
        share = handled_well(rows, t)
        if share > best[1]:
            best = (t, share)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--out", type=pathlib.Path, default=OUT)
    args = ap.parse_args(argv)

    import yaml
    from rasa.core.agent import Agent
    from rasa.model_training import train_nlu
    from rasa.shared.nlu.training_data.formats.rasa_yaml import RasaYAMLWriter
    from rasa.shared.nlu.training_data.loading import load_data
    from rasa.shared.nlu.training_data.training_data import TrainingData
    from rasa.utils.common import configure_logging_and_warnings
    from rasa.utils.log_utils import configure_structlog

    configure_logging_and_warnings(logging.WARNING)
    configure_structlog(logging.WARNING)
    config = yaml.safe_load((ROOT / "config.yml").read_text())
    current = next(c for c in config["pipeline"] if c["name"] == "FallbackClassifier")
    config["pipeline"] = [c for c in config["pipeline"] if c["name"] not in NOT_INTENT]
    config.pop("policies", None)

    examples = [m for m in load_data(str(ROOT / "nlu" / "data")).intent_examples]
    random.Random(0).shuffle(examples)
    rows: list[tuple[str, float, str]] = []
    loop = asyncio.new_event_loop()
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        (work / "config.yml").write_text(yaml.safe_dump(config))
        for fold in range(args.folds):
            held = examples[fold :: args.folds]
            held_ids = {id(m) for m in held}
            train = TrainingData([m for m in examples if id(m) not in held_ids])
            RasaYAMLWriter().dump(work / "train.yml", train)
            print(f"==> fold {fold + 1}/{args.folds}: training on {len(train.training_examples)}, testing on {len(held)}",
                  flush=True)
            model = train_nlu(str(work / "config.yml"), str(work / "train.yml"), str(work), fixed_model_name=f"f{fold}")
            agent = Agent.load(model)
            for message in held:
                parsed = loop.run_until_complete(agent.parse_message(message.get("text")))
                rows.append((parsed["intent"]["name"], float(parsed["intent"]["confidence"]), message.get("intent")))

    threshold, handled = best_threshold(rows)
    at_current = handled_well(rows, float(current["threshold"]))
    result = {
        "folds": args.folds,
        "examples": len(rows),
        "accuracy_without_threshold": round(sum(p == g for p, _, g in rows) / len(rows), 4),
        "chosen_threshold": round(threshold, 3),
        "handled_well_at_chosen": round(handled, 4),
        "configured_threshold": current["threshold"],
        "handled_well_at_configured": round(at_current, 4),
        "fallback_rate_at_chosen": round(sum(c < threshold for _, c, _ in rows) / len(rows), 4),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"==> wrote {args.out}; set FallbackClassifier's threshold in config.yml to the chosen value")
    return 0


if __name__ == "__main__":
    sys.exit(main())
