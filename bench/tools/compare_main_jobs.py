#!/usr/bin/env python3
"""Usage: compare_main_jobs.py CLONE_BEFORE CLONE_AFTER (each after `./run demo`, same machine and
seed). Compares every number of every family's test-split evaluation (evaluation_history.csv)
and validation card to 1e-6; latency and ids are left out."""

import csv
import glob
import json
import sys

SKIP = {"evaluation_id", "evaluated_at", "model_version", "report_json", "report_html", "latency_p50_ms",
        "latency_p99_ms"}


def load(root: str) -> tuple[dict, dict]:
    with open(f"{root}/data/artifacts/evaluation_history/evaluation_history.csv") as f:
        rows = {r["model_family"]: r for r in csv.DictReader(f)}
    cards = {}
    for p in glob.glob(f"{root}/data/artifacts/models/*/*/card.json"):
        with open(p) as f:
            c = json.load(f)
        cards[c["family"]] = c
    return rows, cards


def main() -> int:
    (rb, cb), (ra, ca) = load(sys.argv[1]), load(sys.argv[2])
    worst, n, diffs = 0.0, 0, 0
    for fam in sorted(rb):
        pairs = [(k, v, ra[fam][k]) for k, v in rb[fam].items() if k not in SKIP]
        pairs += [(f"card.{k}", v, ca[fam]["validation"][k]) for k, v in cb[fam]["validation"].items()]
        for k, v, w in pairs:
            n += 1
            try:
                d = abs(float(v) - float(w))
            except ValueError:
                d = 0.0 if v == w else float("inf")
            worst = max(worst, d)
            if d > 1e-6:
                diffs += 1
                print("DIFF", fam, k, v, w)
    print(f"{n} values compared over {len(rb)} families; largest difference {worst:.3g}")
    return 1 if diffs else 0


if __name__ == "__main__":
    raise SystemExit(main())
