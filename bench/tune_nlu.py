"""Chooses the benchmark pipeline's classifier settings on validation data, never on a test split.

The featurizers of bench/configs/project_nlu.yml (the encoder fine-tuned as configured) are trained once on
the training part, then nlu.LinearIntentClassifier is fitted for every point of a small grid (C, and the
weight of the transformer block against the count-vector blocks) and scored on the validation part:
- a data set with a validation split (CLINC150's in-scope `val`, Bitext) uses it as it is;
- BANKING77 has none: a stratified 15 % of its train split is held out (seeded), the rest is trained on.

    .venv-rasa/bin/python bench/tune_nlu.py banking77  ->  bench/results/tune-banking77.json

Copy the chosen values into the config by hand: the choice is a decision to review, not a side effect.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import logging
import pathlib
import sys
import time
from collections import defaultdict

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
_spec = importlib.util.spec_from_file_location("bench_nlu", ROOT / "bench" / "bench_nlu.py")
bench_nlu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_nlu)

GRID_C = (3.0, 10.0, 30.0)
GRID_DENSE_WEIGHT = (1.0, 1.5, 2.0, 3.0, 4.0)
CLASSIFIER = "nlu.LinearIntentClassifier"


def carve_validation(train: list[tuple[str, str]], share: float = 0.15, seed: int = 0):
    """(rest, held out): `share` of every intent's examples, picked at random with a fixed seed."""
    import random

    by_intent: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for example in train:
        by_intent[example[1]].append(example)
    rng = random.Random(seed)
    rest, held = [], []
    for intent in sorted(by_intent):
        examples = by_intent[intent][:]
        rng.shuffle(examples)
        # An intent with a single example stays in training: a classifier cannot predict what it never saw.
        cut = max(1, round(len(examples) * share)) if len(examples) > 1 else 0
        held += examples[:cut]
        rest += examples[cut:]
    return rest, held


def split_for_tuning(layout: str, splits: dict, seed: int = 0) -> tuple[list, list]:
    if "val" in splits:
        return splits["train"], [(t, l) for t, l in splits["val"] if l != bench_nlu.OOS]
    return carve_validation(splits["train"], seed=seed)


def featurize(pipeline: list[dict], train: list, val: list, workdir: pathlib.Path):
    """Trains every component before the classifier on `train` and runs them on both parts, as Rasa would."""
    from rasa.engine.graph import ExecutionContext, GraphSchema
    from rasa.engine.recipes.default_recipe import DefaultV1Recipe
    from rasa.engine.storage.local_model_storage import LocalModelStorage
    from rasa.engine.storage.resource import Resource
    from rasa.shared.nlu.training_data.message import Message
    from rasa.shared.nlu.training_data.training_data import TrainingData

    import shutil

    shutil.rmtree(workdir, ignore_errors=True)  # a fresh store: a resource is written once
    workdir.mkdir(parents=True)
    storage = LocalModelStorage(workdir)
    train_data = TrainingData([Message.build(text=t, intent=l) for t, l in train])
    val_messages = [Message.build(text=t) for t, _ in val]
    for i, entry in enumerate(pipeline):
        name = entry["name"]
        if name == CLASSIFIER:
            break
        registered = DefaultV1Recipe._from_registry(name)
        cls = registered.clazz
        node = f"run_{name}{i}"
        config = {**cls.get_default_config(), **{k: v for k, v in entry.items() if k != "name"}}
        component = cls.create(config, storage, Resource(node), ExecutionContext(GraphSchema({}), node_name=node))
        started = time.perf_counter()
        if registered.is_trainable:
            component.train(train_data)
        component.process_training_data(train_data)
        component.process(val_messages)
        print(f"==> {name}: {time.perf_counter() - started:.0f} s", flush=True)
    return storage, train_data, val_messages


def without_origin(messages: list, origin: str | None):
    """Copies of the messages without the features of one featurizer (None: the messages themselves)."""
    from rasa.shared.nlu.training_data.message import Message

    if origin is None:
        return list(messages)
    return [Message(data=dict(m.data), features=[f for f in m.features if str(f.origin) != origin]) for m in messages]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", type=pathlib.Path)
    ap.add_argument("--config", type=pathlib.Path, default=bench_nlu.PROJECT_CONFIG)
    ap.add_argument("--per-intent", type=int, default=None, help="a quick check on the first N examples per intent")
    ap.add_argument("--grid-c", type=float, nargs="+", default=GRID_C, help="values of C to try")
    ap.add_argument("--grid-dense-weight", type=float, nargs="+", default=GRID_DENSE_WEIGHT,
                    help="weights of the transformer block(s) against the count vectors")
    ap.add_argument("--carve-seed", type=int, default=0,
                    help="seed of the held-out share when the data set has no validation split (a second draw "
                         "checks that a choice is not an accident of one)")
    ap.add_argument("--ablate", action="store_true",
                    help="also score every grid point without each transformer block (same features, same run)")
    args = ap.parse_args(argv)

    import numpy as np
    import yaml
    from rasa.engine.graph import ExecutionContext, GraphSchema
    from rasa.engine.storage.resource import Resource
    from rasa.shared.nlu.training_data.training_data import TrainingData
    from rasa.utils.common import configure_logging_and_warnings

    from nlu.classifiers.linear_intent_classifier import LinearIntentClassifier

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s - %(message)s")
    configure_logging_and_warnings(logging.INFO)
    dataset = args.dataset
    if not dataset.is_dir():
        dataset = ROOT.parent / "shared" / "benchmarks" / dataset
    layout, splits = bench_nlu.load_dataset(dataset.resolve())
    splits["train"] = bench_nlu.subset(splits["train"], args.per_intent)
    train, val = split_for_tuning(layout, splits, args.carve_seed)
    print(f"==> {dataset.name}: tuning on {len(train)} examples, validating on {len(val)}", flush=True)
    pipeline = yaml.safe_load(args.config.read_text())["pipeline"]
    workdir = bench_nlu.TMP_DIR / dataset.name / "tune"
    workdir.mkdir(parents=True, exist_ok=True)
    storage, train_data, val_messages = featurize(pipeline, train, val, workdir / "storage")
    configured = next((e for e in pipeline if e["name"] == CLASSIFIER), {})
    gold = np.array([l for _, l in val])

    variants = {"all blocks": None}
    if args.ablate:
        dense = sorted({str(f.origin) for m in train_data.intent_examples for f in m.features if not f.is_sparse()})
        variants.update({f"without {origin}": origin for origin in dense})
    points = []
    for (variant, dropped), c, dense_weight in itertools.product(variants.items(), args.grid_c, args.grid_dense_weight):
        config = {**LinearIntentClassifier.get_default_config(),
                  **{k: v for k, v in configured.items() if k != "name"}, "C": c, "dense_weight": dense_weight}
        node = f"clf_{len(points)}"
        classifier = LinearIntentClassifier.create(config, storage, Resource(node),
                                                   ExecutionContext(GraphSchema({}), node_name=node))
        started = time.perf_counter()
        classifier.train(TrainingData(without_origin(train_data.intent_examples, dropped)))
        probas = classifier.predict_proba(without_origin(val_messages, dropped))
        accuracy = float((np.array(classifier.classes)[probas.argmax(axis=1)] == gold).mean())
        points.append({"blocks": variant, "C": c, "dense_weight": dense_weight, "val_accuracy": round(accuracy, 4),
                       "fit_seconds": round(time.perf_counter() - started, 1)})
        print(f"    {variant}: C={c:<5} dense_weight={dense_weight:<4} val accuracy {accuracy:.4f}", flush=True)
    points_all = [p for p in points if p["blocks"] == "all blocks"]
    best = max(points_all, key=lambda p: (p["val_accuracy"], -abs(p["dense_weight"] - 1.0), -p["C"]))
    result = {"dataset": dataset.name, "config": str(args.config), "train_examples": len(train),
              "val_examples": len(val), "validation": "official val split" if "val" in splits else
              f"stratified 15 % of train (seed {args.carve_seed})", "grid": points, "best": best}
    bench_nlu.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.config.resolve() == bench_nlu.PROJECT_CONFIG.resolve() else f"-{args.config.stem}"
    out = bench_nlu.RESULTS_DIR / f"tune-{dataset.name}{suffix}{'-seed%d' % args.carve_seed if args.carve_seed else ''}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(best))
    print(f"==> wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
