"""Benchmark: what a retrain costs after one new batch arrives, on an instance the main job built.

It rebuilds one batch as if it had just landed (``prepare_batch_job`` on its partition: images,
labels, patches, augmented set, backbone features, pool), then runs ``retrain_job`` as the retrain
sensor would, with its default config (every family trains again on every batch, warm-started
where sound, the features of the other batches reused; evaluation, champion, deployment to the
running service, the next labeling queue). Prints both times and their sum.

    DAGSTER_HOME=<clone>/.dagster_home DEFECT_ASSETS_DATA_DIR=<clone>/data \\
        .venv/bin/python bench/retrain.py [--batch elpv-04] [--service-url http://127.0.0.1:8000]

Run it in the clone where ``./run demo`` ran (its service still up, or pass --service-url '' to
promote without the HTTP smoke test).
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", default="elpv-04", help="the batch treated as new")
    ap.add_argument("--service-url", default="http://127.0.0.1:8000")
    args = ap.parse_args()
    import dagster as dg

    from defect_assets.definitions import build_defs  # noqa: I001 - after the environment is read
    from defect_assets.defs.deploy.assets import DeployConfig
    from defect_assets.defs.jobs import prepare_batch_job, retrain_job
    from defect_assets.defs.landing.sensors import ETAG_TAG
    from defect_assets.demo import quiet, recipe, run_job
    from defect_assets.storage.batches import list_batches

    instance = dg.DagsterInstance.get()
    defs = build_defs()
    etags = list_batches(defs.resources["landing_zone"].open())
    if args.batch not in etags:
        raise SystemExit(f"batch {args.batch} is not in the landing zone ({sorted(etags)})")
    prepare_ops, _ = recipe("elpv", 64, 300, quick=False)
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    t0 = time.perf_counter()
    run_job(defs, instance, prepare_batch_job, f"batch {args.batch}", dg.RunConfig(ops=prepare_ops, loggers=quiet()),
            partition_key=args.batch, tags={ETAG_TAG: etags[args.batch]})
    prepare_s = time.perf_counter() - t0
    print(f"prepare_batch_job[{args.batch}]: {prepare_s:.0f}s", flush=True)
    t1 = time.perf_counter()
    ops = {"deployed_endpoint": DeployConfig(service_url=args.service_url)} if args.service_url else {}
    result = run_job(defs, instance, retrain_job, "retrain", dg.RunConfig(ops=ops, loggers=quiet("INFO")))
    retrain_s = time.perf_counter() - t1
    champion = result.output_for_node("champion_model")
    print(f"retrain_job: {retrain_s:.0f}s (run {result.run_id[:8]}); champion {champion.model_version}: "
          f"{champion.reason}")
    print(f"one new batch to a deployed retrain: {prepare_s + retrain_s:.0f}s "
          f"({(prepare_s + retrain_s) / 60:.1f} min; target <= 10 min)")


if __name__ == "__main__":
    main()
