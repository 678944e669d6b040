"""The classical baseline: scikit-learn hashed word uni+bigram TF-IDF + logistic regression, trained
on the teacher's labels, scored on the gold labels of the held-out mails.
usage: baseline.py TRAIN_JSONL EVAL_JSONL  -> prints one JSON line"""
import json
import sys
import time

from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline


def read(path):
    rows = [json.loads(l) for l in open(path, encoding="utf-8") if l.strip()]
    return [r["text"] for r in rows], [r["label"] for r in rows]


train_x, train_y = read(sys.argv[1])
eval_x, eval_y = read(sys.argv[2])
t0 = time.time()
model = make_pipeline(
    HashingVectorizer(ngram_range=(1, 2), n_features=2**20, alternate_sign=False, norm=None),
    TfidfTransformer(sublinear_tf=True),
    LogisticRegression(C=20.0, max_iter=2000),
)
model.fit(train_x, train_y)
train_secs = time.time() - t0
pred = model.predict(eval_x)
acc = sum(p == y for p, y in zip(pred, eval_y)) / len(eval_y)
t1 = time.time()
for x in eval_x[:200]:
    model.predict([x])
per_item_ms = (time.time() - t1) / 200 * 1000
print(json.dumps({"accuracy": acc, "train_secs": train_secs, "predict_ms": per_item_ms, "n_train": len(train_x), "n_eval": len(eval_x)}))
