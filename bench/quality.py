"""Benchmark: what the main job's recipe is worth on ELPV, with the figures a person needs to
judge it. Per family and for the champion: test accuracy, balanced accuracy, ROC AUC, defect
recall at the chosen threshold and 4-level accuracy (each family's recipe trained again on the
4 probability levels), each with its 95% bootstrap interval, beside the majority-class
baseline and the training time.

    .venv/bin/python bench/quality.py [--data-dir data]

It reads the models, evaluations and patches the main job left in ``--data-dir`` (default
./data; run ``./run demo`` first, or pass ``--run-demo`` to run it here with this project's
defaults). The 4-level models are trained with the same settings but ``task=multiclass``,
registered in a temporary registry and evaluated on the same held-out test split; the test
split chose nothing.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402


def latest_evaluations(store) -> pd.DataFrame:
    from defect_assets.pipeline.evaluate import HISTORY_PARQUET

    hist = pd.read_parquet(store.open_read(HISTORY_PARQUET))
    hist = hist[hist["task"] == "binary"]
    return hist.sort_values("evaluated_at").groupby("model_family").tail(1).set_index("model_family")


def stored(store, asset: str) -> dict:
    """{batch: value} of a partitioned asset, as the IO manager stored it."""
    from defect_assets.storage.formats import read_value

    batches = sorted(store.walk_prefixes(f"{asset}/"))
    return {b: read_value(store, f"{asset}/{b}") for b in batches if store.exists(f"{asset}/{b}/current.json")}


def four_level(family, card, store, scratch, trained_4: dict) -> dict:
    """The family's recipe (the settings in its card) trained on the 4 levels, evaluated on test;
    an ensemble combines the 4-level models of its members (``trained_4``: asset -> card)."""
    from defect_assets.pipeline.evaluate import EvalSettings, evaluate
    from defect_assets.pipeline.training import card_summary
    from defect_assets.storage.registry import ModelRegistry

    registry = ModelRegistry(scratch)
    fields = set(family.settings.model_fields)
    if "task" not in fields and family.artifact_kind != "ensemble":  # a binary-only family (anomaly): no 4-level model
        return {"acc4": float("nan"), "acc4_ci": [float("nan")] * 2, "acc4_baseline": float("nan"),
                "acc4_train_s": float("nan")}
    settings = {k: v for k, v in card.config.items() if k in fields}
    config = family.settings(**({**settings, "task": "multiclass"} if "task" in fields else settings))
    # per-batch values from the store; an ensemble's members are the 4-level models trained above
    inputs = {name: card_summary(trained_4[name]) if name in trained_4 else stored(store, name)
              for name in family.inputs}
    t0 = time.perf_counter()
    trained = family.train(config, inputs, registry, lambda _: None)
    seconds = time.perf_counter() - t0
    trained_4[family.asset] = trained.card
    report, _ = evaluate(registry, trained.card.version, stored(store, "labeled_patches"), EvalSettings(), scratch)
    return {"acc4": report.accuracy, "acc4_ci": report.accuracy_ci, "acc4_baseline": report.majority_baseline,
            "acc4_train_s": seconds}


def champion_predictions(store, registry) -> tuple[str, pd.DataFrame]:
    """(version, test-split table) of the production champion, as champion_test_predictions stored it."""
    from defect_assets.storage.layout import champion_predictions_key

    version = (registry.production() or {}).get("version")
    if version is None or not store.exists(champion_predictions_key(version)):
        raise SystemExit("no production champion with stored test predictions (materialize champion_test_predictions)")
    with store.open_read(champion_predictions_key(version)) as f:
        return version, pd.read_parquet(f)


def compare_champions(store, registry, other_store, other_dir: str) -> None:
    """This champion minus the other data folder's on the test images both hold: the paired
    bootstrap of the ROC AUC difference (the same gate the champion check applies)."""
    from defect_assets.ml.evaluation import paired_auc_difference
    from defect_assets.storage.registry import ModelRegistry

    mine_v, mine = champion_predictions(store, registry)
    other_v, other = champion_predictions(other_store, ModelRegistry(other_store))
    both = mine.merge(other, on="image_id", suffixes=("", "_other"))
    if (both["is_defect"] != both["is_defect_other"]).any():
        raise SystemExit("the two test splits label the same image differently: not comparable")
    diff = paired_auc_difference(both["is_defect"].to_numpy(int), both["defect_score"].to_numpy(),
                                 both["defect_score_other"].to_numpy())
    acc, acc_other = both["correct"].mean(), both["correct_other"].mean()
    print(f"\nchampion {mine_v} against {other_v} from {other_dir}, on the "
          f"{len(both)} test images both scored (of {len(mine)} and {len(other)}):")
    print(f"  ROC AUC difference {diff['delta']:+.4f}, paired bootstrap 95% interval [{diff['low']:+.4f}, "
          f"{diff['high']:+.4f}] ({diff['resamples']} resamples); accuracy {acc:.3f} against {acc_other:.3f} "
          f"at each one's own threshold")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(ROOT / "data"))
    p.add_argument("--run-demo", action="store_true", help="run the main job (no service) into --data-dir first")
    p.add_argument("--no-four-level", action="store_true", help="skip retraining each family on the 4 levels")
    p.add_argument("--against", metavar="DATA_DIR",
                   help="another main job's data folder (for example one built by an older commit): its champion "
                        "and this one's on the test images both scored, paired bootstrap of the ROC AUC difference")
    p.add_argument("--four-level-families", nargs="+", metavar="FAMILY",
                   help="retrain only these families on the 4 levels (default: every family; the Keras ones "
                        "take as long as in the main job)")
    args = p.parse_args()
    data_dir = Path(args.data_dir).resolve()
    if args.run_demo:
        env = {**os.environ, "DEFECT_ASSETS_DATA_DIR": str(data_dir),
               "DAGSTER_HOME": os.environ.get("DAGSTER_HOME", str(data_dir / "dagster_home"))}
        subprocess.run([sys.executable, "-m", "defect_assets.cli", "demo", "--no-serve"], env=env, check=True)

    from defect_assets.pipeline.family_registry import families
    from defect_assets.storage import LocalObjectStore
    from defect_assets.storage.registry import ModelRegistry

    store = LocalObjectStore(data_dir / "artifacts")
    registry = ModelRegistry(store)
    evals = latest_evaluations(store)
    production = (registry.production() or {}).get("version")
    rows, trained_4, baseline4 = [], {}, None
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        scratch = LocalObjectStore(tmp)
        for family in families():
            if family.name not in evals.index:
                print(f"{family.name}: no evaluation in {data_dir} (run ./run demo first)")
                continue
            e = evals.loc[family.name]
            card = registry.card(e["model_version"])
            row = {"family": family.name, "champion": "*" if e["model_version"] == production else "",
                   "accuracy": e["accuracy"], "acc_ci95": f"{e['accuracy_ci_low']:.3f}-{e['accuracy_ci_high']:.3f}",
                   "bal_acc": e["balanced_accuracy"], "roc_auc": e["roc_auc"],
                   "auc_ci95": f"{e['roc_auc_ci_low']:.3f}-{e['roc_auc_ci_high']:.3f}", "recall": e["recall"],
                   "train_s": round(float(card.training_seconds))}
            wanted = args.four_level_families is None or family.name in args.four_level_families
            if not args.no_four_level and wanted:
                print(f"{family.name}: training its recipe on the 4 levels ...", flush=True)
                four = four_level(family, card, store, scratch, trained_4)
                row.update({"acc_4level": four["acc4"],
                            "acc4_ci95": f"{four['acc4_ci'][0]:.3f}-{four['acc4_ci'][1]:.3f}",
                            "train4_s": four["acc4_train_s"] if four["acc4_train_s"] != four["acc4_train_s"]
                            else round(four["acc4_train_s"])})
                if four["acc4_baseline"] == four["acc4_baseline"]:  # NaN for a binary-only family
                    baseline4 = four["acc4_baseline"]
            rows.append(row)
    table = pd.DataFrame(rows)
    n, base = int(evals["test_patches"].iloc[0]), float(evals["majority_baseline"].iloc[0])
    print(f"\nELPV test split: {n} cells never used for training or choosing; majority-class baseline "
          f"accuracy {base:.3f} (binary)" + ("" if baseline4 is None else f", {baseline4:.3f} (4 levels)"))
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("(* = the champion in production; intervals: 95% bootstrap over test cells, 1000 resamples)")
    if args.against:
        compare_champions(store, registry, LocalObjectStore(Path(args.against).resolve() / "artifacts"), args.against)
    print("targets (issue 10): accuracy >= 0.92, ROC AUC >= 0.96, recall >= 0.85, 4-level accuracy >= 0.885")


if __name__ == "__main__":
    main()
