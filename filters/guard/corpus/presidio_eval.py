"""Presidio's pattern recognizers on the guard's PII corpus: the anchor the guard's redactor is
measured against (BENCHMARKS.md, "PII recall and precision"). Same table as the guard's
`pii_eval` example.

Presidio (PyPI presidio-analyzer) runs here without its NLP engine (its spaCy model does not
install on these machines): each predefined recognizer class is called on its own with
nlp_artifacts=None, so no context word raises or lowers a score, and every result counts
whatever its score (Presidio's AnalyzerEngine default threshold is 0). Birth dates are
Presidio's DATE_TIME (it has no date-of-birth type).

usage: python3 presidio_eval.py [pii.jsonl] [-v]
"""

import json
import os
import sys
from collections import defaultdict

from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    DateRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    PhoneRecognizer,
    UsLicenseRecognizer,
    UsPassportRecognizer,
    UsSsnRecognizer,
)

TYPES = {
    "PHONE_NUMBER": "phone",
    "CREDIT_CARD": "card",
    "US_SSN": "ssn",
    "EMAIL_ADDRESS": "email",
    "IBAN_CODE": "iban",
    "US_PASSPORT": "passport",
    "US_DRIVER_LICENSE": "driver_license",
    "DATE_TIME": "birth_date",
    "IP_ADDRESS": "ipv4",
}

RECOGNIZERS = [
    PhoneRecognizer(), CreditCardRecognizer(), UsSsnRecognizer(), EmailRecognizer(),
    IbanRecognizer(), UsPassportRecognizer(), UsLicenseRecognizer(), DateRecognizer(), IpRecognizer(),
]


def find(text):
    out = []
    for r in RECOGNIZERS:
        for res in r.analyze(text, entities=r.supported_entities, nlp_artifacts=None) or []:
            t = TYPES.get(res.entity_type)
            if t:
                out.append((res.start, res.end, t))
    return out


def main():
    args = [a for a in sys.argv[1:] if a != "-v"]
    verbose = "-v" in sys.argv
    path = args[0] if args else os.path.join(os.path.dirname(__file__), "pii.jsonl")
    types = defaultdict(lambda: {"n": 0, "found": 0, "typed": 0, "tp": 0, "fp": 0})
    benign = defaultdict(lambda: [0, 0])
    for line in open(path, encoding="utf-8"):
        v = json.loads(line)
        text = v["text"]
        spans = find(text)
        if v["kind"] == "benign":
            b = benign[v["family"]]
            b[0] += 1
            b[1] += bool(spans)
            for _, _, t in spans:
                types[t]["fp"] += 1
            if verbose and spans:
                print("ALTERED", spans, text)
            continue
        ty, value = v["type"], v["value"]
        start = text.find(value)
        end = start + len(value)
        covered = all(any(s <= i < e for s, e, _ in spans) for i in range(start, end))
        typed = any(t == ty and s < end and start < e for s, e, t in spans)
        for s, e, t in spans:
            if t == ty and s < end and start < e:
                types[t]["tp"] += 1
            else:
                types[t]["fp"] += 1
        c = types[ty]
        c["n"] += 1
        c["found"] += covered
        c["typed"] += typed
        if verbose and not covered:
            print("MISSED", ty, text)

    def pct(a, n):
        return 100.0 * a / max(n, 1)

    print("| type | entities | recall | as its type | precision |")
    print("|---|---:|---:|---:|---:|")
    for t in sorted(types):
        c = types[t]
        print(f"| {t} | {c['n']} | {pct(c['found'], c['n']):.1f} % | {pct(c['typed'], c['n']):.1f} % | "
              f"{pct(c['tp'], c['tp'] + c['fp']):.1f} % |")
    print()
    print("| lookalike family | sentences | altered |")
    print("|---|---:|---:|")
    n = altered = 0
    for f in sorted(benign):
        k, a = benign[f]
        print(f"| {f} | {k} | {pct(a, k):.1f} % |")
        n += k
        altered += a
    print(f"| **all** | {n} | **{pct(altered, n):.1f} %** |")


if __name__ == "__main__":
    main()
