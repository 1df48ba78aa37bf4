"""NLU benchmark: the project's pipeline against Rasa's default pipeline on a public intent data set.

    make bench-nlu DATASET=../shared/benchmarks/banking77      (or: .venv-rasa/bin/python bench/bench_nlu.py DIR)

Layouts (detected from the folder's files):
- BANKING77: train.csv + test.csv with columns text,category.
- CLINC150: data_full.json; `train` plus its 100 `oos_train` questions as one more intent, `oos` (the
  "oos-train" protocol of Larson et al. 2019, the product's out-of-scope intent). A question is declined
  when it is classified `oos` or its confidence is below a threshold chosen on `val` + `oos_val` (the best
  in-scope accuracy among thresholds that decline >= 75 % of `oos_val`); then in-scope accuracy is measured
  on `test` (a declined question counts as an error) and out-of-scope recall on `oos_test`.
- Bitext: *Training*/*Validation*/*Testing* CSVs with utterance,intent.

Each pipeline is trained and tested in a process of its own (so peak RSS is its own), with Rasa's real
training and an Agent parsing one message at a time (so parse latency is what a user sees). The baseline's
figures do not depend on machine load, so they are cached under bench/cache/ keyed by the data set's content,
the Rasa version and the baseline config; `--baseline skip` leaves them out when no cache entry exists yet.
Writes bench/results/nlu-<folder name>.json.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import pathlib
import re
import subprocess
import sys
import time
from collections import defaultdict
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROJECT_CONFIG = ROOT / "bench" / "configs" / "project_nlu.yml"
BASELINE_CONFIG = ROOT / "bench" / "configs" / "rasa_default.yml"
CACHE_DIR = ROOT / "bench" / "cache"
RESULTS_DIR = ROOT / "bench" / "results"
TMP_DIR = ROOT / "bench" / "tmp"
FALLBACK = "nlu_fallback"
# CLINC150: the in-scope accuracy on `val` the out-of-scope threshold must keep. The product's target is 0.93 on
# test; `val` holds 3,000 in-scope questions drawn like test's 4,500, so 1.5 points of margin is ~2.8 standard
# errors of the difference between the two.
MIN_VAL_ACCURACY = 0.945
OOS = "oos"

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------- data sets

def _clean(text: str) -> str:
    # Some BANKING77 texts hold newlines or stray spaces: one line, trimmed, as the data set README says.
    return re.sub(r"\s+", " ", text).strip()


def _read_csv(path: pathlib.Path, text_col: str, label_col: str) -> list[tuple[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return [(_clean(r[text_col]), r[label_col].strip()) for r in csv.DictReader(f) if _clean(r[text_col])]


def load_dataset(folder: pathlib.Path) -> tuple[str, dict[str, list[tuple[str, str]]]]:
    """(layout, splits). Splits: train, test, and where the layout has them val, oos_val, oos_test."""
    if (folder / "train.csv").is_file() and (folder / "test.csv").is_file():
        return "banking77", {s: _read_csv(folder / f"{s}.csv", "text", "category") for s in ("train", "test")}
    if (folder / "data_full.json").is_file():
        raw = json.loads((folder / "data_full.json").read_text())
        splits = {s: [(_clean(t), l) for t, l in raw[s]] for s in ("train", "val", "test", "oos_val", "oos_test")}
        # The out-of-scope intent learns from oos_train only; oos_val and oos_test stay unseen.
        splits["train"] += [(_clean(t), OOS) for t, _ in raw["oos_train"]]
        return "clinc150", splits
    found = {}
    for split, word in (("train", "Training"), ("val", "Validation"), ("test", "Testing")):
        match = sorted(folder.glob(f"*{word}*.csv"))
        if match:
            found[split] = _read_csv(match[0], "utterance", "intent")
    if "train" in found and "test" in found:
        return "bitext", found
    raise SystemExit(f"error: {folder} has no known layout (train.csv+test.csv, data_full.json, or Bitext CSVs)")


def subset(examples: list[tuple[str, str]], per_intent: int | None) -> list[tuple[str, str]]:
    """The first `per_intent` examples of each intent (deterministic), or everything."""
    if not per_intent:
        return examples
    seen: dict[str, int] = defaultdict(int)
    out = []
    for text, label in examples:
        if seen[label] < per_intent:
            seen[label] += 1
            out.append((text, label))
    return out


def sha256_files(paths: list[pathlib.Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


# ---------------------------------------------------------------- metrics

def macro_f1(gold: list[str], pred: list[str]) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(gold, pred, labels=sorted(set(gold)), average="macro", zero_division=0))


def declined(pred: str, confidence: float, threshold: float) -> bool:
    """The assistant declines a question it classifies as out of scope or is not confident about."""
    return pred == OOS or confidence < threshold


def choose_threshold(val: list[tuple[str, float, str]], oos_val: list[tuple[str, float, str]],
                     min_accuracy: float = MIN_VAL_ACCURACY) -> float:
    """The confidence threshold chosen on validation data: the one declining the most of `oos_val` among those
    that keep in-scope accuracy on `val` >= `min_accuracy` (ties: the lower threshold). In-scope accuracy is
    measured on 3,000 questions and out-of-scope recall on only 100, so the well-measured side is the
    constraint. When no threshold keeps the accuracy, 0: only the out-of-scope intent declines."""
    candidates = []
    for t in sorted({0.0, *[c for _, c, _ in val], *[c for _, c, _ in oos_val]}):
        acc = sum(p == g and not declined(p, c, t) for p, c, g in val) / len(val)
        rec = sum(declined(p, c, t) for p, c, _ in oos_val) / len(oos_val)
        candidates.append((t, acc, rec))
    meeting = [c for c in candidates if c[1] >= min_accuracy]
    if not meeting:
        return 0.0
    return max(meeting, key=lambda c: (c[2], -c[0]))[0]


def threshold_curve(preds: dict[str, list[tuple[str, float, str]]]) -> list[dict[str, float]]:
    """In-scope accuracy and out-of-scope recall of validation and test at a few thresholds: the trade-off
    the chosen threshold sits on, reported (never used to choose)."""
    def at(t: float, inside: list, outside: list) -> tuple[float, float]:
        acc = sum(p == g and not declined(p, c, t) for p, c, g in inside) / len(inside)
        return round(acc, 4), round(sum(declined(p, c, t) for p, c, _ in outside) / len(outside), 4)

    rows = []
    for t in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7):
        val_acc, val_rec = at(t, preds["val"], preds["oos_val"])
        test_acc, test_rec = at(t, preds["test"], preds["oos_test"])
        rows.append({"threshold": t, "val_accuracy": val_acc, "oos_val_recall": val_rec,
                     "test_accuracy": test_acc, "oos_test_recall": test_rec})
    return rows


def score(layout: str, preds: dict[str, list[tuple[str, float, str]]]) -> dict[str, Any]:
    """preds[split] = [(predicted intent, confidence, gold intent)]."""
    out: dict[str, Any] = {}
    threshold = 0.0
    if layout == "clinc150":
        threshold = choose_threshold(preds["val"], preds["oos_val"])
        out["oos_threshold"] = round(threshold, 4)
        out["oos_threshold_min_val_accuracy"] = MIN_VAL_ACCURACY
        out["val_accuracy"] = sum(p == g and not declined(p, c, threshold) for p, c, g in preds["val"]) / len(preds["val"])
        out["oos_val_recall"] = sum(declined(p, c, threshold) for p, c, _ in preds["oos_val"]) / len(preds["oos_val"])
        oos_test = preds["oos_test"]
        out["oos_recall"] = sum(declined(p, c, threshold) for p, c, _ in oos_test) / len(oos_test)
        out["oos_recall_without_threshold"] = sum(p == OOS for p, _, _ in oos_test) / len(oos_test)
        out["threshold_curve"] = threshold_curve(preds)
        out["accuracy_without_threshold"] = sum(p == g for p, _, g in preds["test"]) / len(preds["test"])
    test = [(FALLBACK if declined(p, c, threshold) else p, g) for p, c, g in preds["test"]]
    out["accuracy"] = sum(p == g for p, g in test) / len(test)
    out["macro_f1"] = macro_f1([g for _, g in test], [p for p, _ in test])
    if "val" in preds and layout != "clinc150":
        out["val_accuracy"] = sum(p == g for p, _, g in preds["val"]) / len(preds["val"])
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}


# ---------------------------------------------------------------- one pipeline (child process)

def run_pipeline(config: pathlib.Path, dataset: pathlib.Path, workdir: pathlib.Path, per_intent: int | None) -> dict:
    """Trains `config` on the train split, parses every evaluation message, returns figures and predictions."""
    import asyncio
    import resource

    import numpy as np
    from rasa.core.agent import Agent
    from rasa.model_training import train_nlu
    from rasa.shared.nlu.training_data.formats.rasa_yaml import RasaYAMLWriter
    from rasa.shared.nlu.training_data.message import Message
    from rasa.shared.nlu.training_data.training_data import TrainingData
    from rasa.utils.common import configure_logging_and_warnings

    # A handler for Rasa's INFO lines ("Starting to train component ..."): the progress of training.
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s - %(message)s")
    configure_logging_and_warnings(logging.INFO)
    layout, splits = load_dataset(dataset)
    train = subset(splits["train"], per_intent)
    workdir.mkdir(parents=True, exist_ok=True)
    nlu_file = workdir / "train.yml"
    data = TrainingData([Message.build(text=t, intent=l) for t, l in train])
    RasaYAMLWriter().dump(nlu_file, data)

    print(f"==> training {config.name} on {len(train)} examples, {len(data.intents)} intents", flush=True)
    started = time.perf_counter()
    model = train_nlu(str(config), str(nlu_file), str(workdir), fixed_model_name="model")
    train_seconds = time.perf_counter() - started
    if not model:
        raise SystemExit(f"error: training {config} produced no model")

    # Rasa logs every parsed message at debug level: thousands of lines that would hide the figures.
    from rasa.utils.log_utils import configure_structlog

    configure_logging_and_warnings(logging.WARNING)
    configure_structlog(logging.WARNING)
    agent = Agent.load(model)
    loop = asyncio.new_event_loop()
    evaluate = ["test"] + [s for s in ("val", "oos_val", "oos_test") if s in splits]
    preds: dict[str, list] = {}
    latencies = []
    loop.run_until_complete(agent.parse_message("warm up"))  # first call builds lazy state: not a user's latency
    for split in evaluate:
        rows = []
        for i, (text, gold) in enumerate(splits[split], 1):
            t0 = time.perf_counter()
            parsed = loop.run_until_complete(agent.parse_message(text))
            latencies.append((time.perf_counter() - t0) * 1000)
            # FallbackClassifier's decision is replaced by one threshold chosen on validation data for every
            # pipeline alike, so the classifier's own top intent is what is scored.
            ranking = [r for r in parsed.get("intent_ranking") or [parsed["intent"]] if r["name"] != FALLBACK]
            top = ranking[0] if ranking else {"name": FALLBACK, "confidence": 0.0}
            rows.append((top["name"], float(top["confidence"]), gold))
            if i % 500 == 0:
                print(f"    parsed {i}/{len(splits[split])} of {split}", flush=True)
        preds[split] = rows
    (workdir / "predictions.json").write_text(json.dumps(preds))
    figures = score(layout, preds)
    figures.update(
        train_seconds=round(train_seconds, 1),
        parse_p50_ms=round(float(np.percentile(latencies, 50)), 2),
        parse_p95_ms=round(float(np.percentile(latencies, 95)), 2),
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        train_examples=len(train),
    )
    return figures


def rescore_child(which: str, dataset: pathlib.Path, layout: str) -> dict:
    """The last run's figures with its saved predictions scored again (a changed scoring rule needs no
    retraining); training figures stay those of that run."""
    workdir = TMP_DIR / dataset.name / which
    try:
        figures = json.loads((workdir / "figures.json").read_text())
        preds = json.loads((workdir / "predictions.json").read_text())
    except FileNotFoundError as missing:
        raise SystemExit(f"error: nothing to rescore ({missing.filename}): run the benchmark first")
    # What training and parsing measured stays; every score is computed again.
    kept = ("train_seconds", "parse_p50_ms", "parse_p95_ms", "peak_rss_mb", "train_examples")
    figures = {k: figures[k] for k in kept if k in figures}
    figures.update(score(layout, {k: [tuple(r) for r in v] for k, v in preds.items()}))
    figures["rescored_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return figures


def run_child(which: str, config: pathlib.Path, dataset: pathlib.Path, per_intent: int | None) -> dict:
    workdir = TMP_DIR / dataset.name / which
    out = workdir / "figures.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--child", str(config), str(dataset), "--child-out", str(out)]
    if per_intent:
        cmd += ["--per-intent", str(per_intent)]
    # RASA_MAX_CACHE_SIZE=0: Rasa's training cache would restore components from an earlier run, and the
    # reported train_seconds would then be a cache lookup.
    env = dict(os.environ, RASA_TELEMETRY_ENABLED="false", TF_CPP_MIN_LOG_LEVEL="3", RASA_MAX_CACHE_SIZE="0",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    # Output streams through: Rasa's and the featurizer's progress bars show while it trains.
    rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
    if rc != 0 or not out.is_file():
        raise SystemExit(f"error: the {which} pipeline failed (exit code {rc})")
    return json.loads(out.read_text())


# ---------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", type=pathlib.Path, help="folder of a data set (a bare name is looked up in ../shared/benchmarks)")
    ap.add_argument("--config", type=pathlib.Path, default=PROJECT_CONFIG, help="the project's NLU pipeline")
    ap.add_argument("--baseline", choices=("auto", "run", "skip", "only"), default="auto",
                    help="auto: from the cache, else train it (~100 min on BANKING77); run: always train; "
                         "skip: cache only; only: train the baseline into the cache and nothing else")
    ap.add_argument("--rescore", action="store_true",
                    help="score the last trained project model's saved predictions again (no training)")
    ap.add_argument("--per-intent", type=int, default=None, help="train on the first N examples per intent (a documented subset)")
    ap.add_argument("--child", type=pathlib.Path, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", type=pathlib.Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    dataset = args.dataset
    if not dataset.is_dir() and (ROOT.parent / "shared" / "benchmarks" / dataset).is_dir():
        dataset = ROOT.parent / "shared" / "benchmarks" / dataset
    dataset = dataset.resolve()
    if not dataset.is_dir():
        raise SystemExit(f"error: no data set folder at {args.dataset}")

    if args.child:
        figures = run_pipeline(args.child.resolve(), dataset, args.child_out.parent, args.per_intent)
        args.child_out.write_text(json.dumps(figures, indent=2))
        return 0

    import rasa

    layout, splits = load_dataset(dataset)
    print(f"==> {dataset.name}: layout {layout}, " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()), flush=True)
    data_hash = sha256_files([p for p in dataset.iterdir() if p.suffix in (".csv", ".json")])
    # The baseline's cached figures were scored by the protocol's rule: a new rule is a new cache entry.
    protocol = f"oos-train, threshold keeping val accuracy >= {MIN_VAL_ACCURACY}" if layout == "clinc150" else None
    key_src = json.dumps([data_hash, rasa.__version__, sha256_files([BASELINE_CONFIG]), args.per_intent, protocol])
    cache_file = CACHE_DIR / f"baseline-{dataset.name}-{hashlib.sha256(key_src.encode()).hexdigest()[:16]}.json"

    if args.baseline == "only":
        # Fills the cache at a quiet moment (or at low priority) so a later benchmark run reuses its figures.
        baseline = run_child("baseline", BASELINE_CONFIG, dataset, args.per_intent)
        baseline["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        cache_file.write_text(json.dumps(baseline, indent=2))
        print(json.dumps(baseline, indent=2))
        print(f"==> wrote {cache_file.relative_to(ROOT)}")
        return 0

    # Another pipeline (a comparison, e.g. bench/configs/featurizer-*.yml) gets its own work folder and
    # results file, so it never overwrites the project pipeline's figures.
    config = args.config.resolve()
    tag = "" if config == PROJECT_CONFIG else f"-{config.stem}"
    if args.rescore:
        project = rescore_child("project" + tag, dataset, layout)
    else:
        project = run_child("project" + tag, config, dataset, args.per_intent)

    baseline, from_cache = None, False
    if cache_file.is_file() and args.baseline != "run":
        baseline, from_cache = json.loads(cache_file.read_text()), True
        print(f"==> baseline figures from the cache ({cache_file.relative_to(ROOT)})", flush=True)
    elif args.baseline != "skip":
        baseline = run_child("baseline", BASELINE_CONFIG, dataset, args.per_intent)
        baseline["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        cache_file.write_text(json.dumps(baseline, indent=2))

    result: dict[str, Any] = {"dataset": dataset.name, "layout": layout, "protocol": protocol, "rasa_version": rasa.__version__,
                              "config": str(args.config), "train_subset_per_intent": args.per_intent, **project}
    for k, v in (baseline or {}).items():
        result[f"baseline_{k}"] = v
    if baseline is None:
        result.update(baseline_accuracy=None, baseline_macro_f1=None)
        if layout == "clinc150":
            result["baseline_oos_recall"] = None
        result["baseline_note"] = "not measured in this run and not in the cache (--baseline skip)"
    else:
        # Cached timings come from another run: compare them with care (the accuracies do not depend on load).
        result["baseline_from_cache"] = from_cache
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    suffix = f"-{args.per_intent}-per-intent" if args.per_intent else ""
    out = RESULTS_DIR / f"nlu-{dataset.name}{suffix}{tag}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"==> wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
