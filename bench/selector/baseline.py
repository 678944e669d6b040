#!/usr/bin/env python3
"""The classical baseline of the selector's grid: scikit-learn word (1-2) + character (2-4, within
word boundaries) n-gram TF-IDF + logistic regression, trained on the teacher's labels (the same
noisy answers the students learn from), scored on the gold evals. For generation tasks: the
teacher's answer for the nearest training input (character n-gram TF-IDF, cosine), a lookup that
wins where the answer is a memorised fact and loses where it must be composed.

    bench/selector/.venv/bin/python bench/selector/baseline.py [--work /tmp/suite-grid] [--out bench/selector/grid.jsonl]

Reads WORK/TASK/{train,evals,teacher}.json[l] that the grid runner (retort-bench-selector) writes,
and appends one row per task with arm "sklearn-tfidf-lr" (or "sklearn-nearest" for generation),
skipping tasks that already have it.
"""
import argparse
import json
import pickle
import time
from pathlib import Path

from scipy.sparse import hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestNeighbors

CPU_USD_PER_HOUR = 0.04  # as the Rust runner


def read(path):
    rows = [json.loads(l) for l in open(path, encoding="utf-8") if l.strip()]
    return [r["text"] for r in rows], [r["label"] for r in rows]


class Features:
    def __init__(self):
        self.word = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=100_000)
        self.char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, max_features=100_000)

    def fit_transform(self, x):
        return hstack([self.word.fit_transform(x), self.char.fit_transform(x)]).tocsr()

    def transform(self, x):
        return hstack([self.word.transform(x), self.char.transform(x)]).tocsr()


def percentile(samples, q):
    s = sorted(samples)
    return s[min(len(s) - 1, max(0, int(round(q * len(s) + 0.5)) - 1))]


def run(task_dir):
    meta = json.load(open(task_dir / "teacher.json"))
    train_x, train_y = read(task_dir / "train.jsonl")
    eval_x, eval_y = read(task_dir / "evals.jsonl")
    t0 = time.time()
    features = Features()
    x = features.fit_transform(train_x)
    if meta["kind"] == "classification":
        arm = "sklearn-tfidf-lr"
        # lbfgs, capped: the 50-label tasks would otherwise take minutes on a shared core.
        model = LogisticRegression(C=10.0, max_iter=200)
        model.fit(x, train_y)
        predict = lambda xs: list(model.predict(features.transform(xs)))
    else:
        arm = "sklearn-nearest"
        model = NearestNeighbors(n_neighbors=1, metric="cosine").fit(x)
        predict = lambda xs: [train_y[i[0]] for i in model.kneighbors(features.transform(xs), return_distance=False)]
    train_secs = time.time() - t0
    pred = predict(eval_x)
    accuracy = sum(p == y for p, y in zip(pred, eval_y)) / max(1, len(eval_y))
    samples = []
    for text in eval_x[:300]:
        s = time.perf_counter()
        predict([text])
        samples.append((time.perf_counter() - s) * 1e6)
    p50 = percentile(samples, 0.5)
    size = len(pickle.dumps((features, model)))
    return {
        "task": meta["task"],
        "kind": meta["kind"],
        "arm": arm,
        "class": "sklearn",
        "size": "-",
        "probe": False,
        "accuracy": accuracy,
        "teacher_accuracy": meta["teacher_accuracy"],
        "student_minus_teacher": accuracy - meta["teacher_accuracy"],
        "train_examples": len(train_x),
        "train_secs": train_secs,
        "examples_per_sec": len(train_x) / max(train_secs, 1e-9),
        "latency_p50_us": p50,
        "latency_p99_us": percentile(samples, 0.99),
        "artefact_bytes": size,
        "cost_per_1k_usd": 1000 * p50 * 1e-6 * CPU_USD_PER_HOUR / 3600,
        "n_evals": len(eval_y),
        "backend": "scikit-learn (python, 1 core)",
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/suite-grid")
    ap.add_argument("--out", default="bench/selector/grid.jsonl")
    args = ap.parse_args()
    out = Path(args.out)
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            if r.get("class") == "sklearn":
                done.add(r["task"])
    with open(out, "a", encoding="utf-8") as f:
        for task_dir in sorted(Path(args.work).iterdir()):
            if not (task_dir / "teacher.json").exists() or task_dir.name in done:
                continue
            row = run(task_dir)
            print(f"{row['task']} {row['arm']}: accuracy {row['accuracy']:.3f} (teacher {row['teacher_accuracy']:.3f})")
            f.write(json.dumps(row) + "\n")
            f.flush()


if __name__ == "__main__":
    main()
