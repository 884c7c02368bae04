"""The main job on the embedded default: seed the local landing zone with real data, register
the batches as partitions of the project-local Dagster instance, materialize every asset for
every batch (runs are recorded, so `dagster dev` shows them), deploy the champion behind the
scoring service, and print a summary whose closing hints name this machine's real paths, Dagster
instance and ports (``hints.py``)."""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path

import pandas as pd

from defect_assets import hints
from defect_assets.hints import DagsterUI
from defect_assets.ml.records import ModelCard


def say(msg: str = "") -> None:
    print(msg, flush=True)


def _instance():
    import dagster as dg

    home = os.environ.get("DAGSTER_HOME")
    if not home:
        raise SystemExit("DAGSTER_HOME is not set (the CLI sets it to ./.dagster_home)")
    Path(home).mkdir(parents=True, exist_ok=True)
    cfg = Path(home) / "dagster.yaml"
    if not cfg.exists():  # SQLite storage in DAGSTER_HOME (the default), said explicitly; no telemetry
        cfg.write_text("# project-local Dagster instance: SQLite run/event storage in this folder\n"
                       "telemetry:\n  enabled: false\n")
    return dg.DagsterInstance.get()


def seed_landing(dataset: str, landing, batches: int, limit: int | None, workdir: Path) -> list[str]:
    if dataset == "elpv":
        from defect_assets.datasets.elpv import seed_elpv

        return seed_elpv(landing, n_batches=batches, limit=limit,
                         progress=lambda b, n: say(f"  seeded batch {b}: {n} ELPV images"))
    if dataset == "synthetic":
        from defect_assets.ml.synthetic import write_synthetic_surfaces
        from defect_assets.storage.batches import list_batches, upload_folder

        ids, existing = [], list_batches(landing)
        for b in range(1, batches + 1):
            batch_id = f"synthetic-surfaces-{b:02d}"
            ids.append(batch_id)
            if batch_id not in existing:
                folder = workdir / batch_id
                write_synthetic_surfaces(folder, n_images=limit or 24, seed=b)
                upload_folder(folder, landing, batch_id)
                say(f"  seeded batch {batch_id}: {limit or 24} SYNTHETIC surface photos with points.csv")
        return ids
    raise SystemExit(f"unknown dataset {dataset!r} (elpv or synthetic)")


def quiet(level: str = "WARNING") -> dict:
    """The loggers part of a run config: the console shows this level and above."""
    return {"console": {"config": {"log_level": level}}}


def dagster_ui(instance) -> DagsterUI:
    """The Dagster UI on ``instance`` and this data folder (the same answer all along this process)."""
    from defect_assets.storage.env import default_data_dir

    runs = instance.get_runs(limit=1)
    return hints.dagster_ui(Path(instance.root_directory), default_data_dir(), runs[0].run_id if runs else None)


def run_job(defs, instance, job, what: str, run_config=None, hint: str = "", **kwargs):
    """Execute ``job`` of ``defs`` in this process, recorded in ``instance``; on failure print
    every failed step's message and stop with where the run is shown in the Dagster UI (and ``hint``)."""
    name = job if isinstance(job, str) else job.name
    result = defs.resolve_job_def(name).execute_in_process(instance=instance, run_config=run_config,
                                                                raise_on_error=False, **kwargs)
    if not result.success:
        for ev in result.all_events:
            if ev.is_failure:
                say(f"    FAILED: {ev.message}")
        ui = dagster_ui(instance)
        raise SystemExit(f"{what} failed; every step of run {result.run_id} is at {ui.run_url(result.run_id)} "
                         f"{ui.how()}{hint}")
    return result


def materialize_batches(defs, instance, batch_ids: list[str], force: bool, run_config) -> list[str]:
    import dagster as dg

    from defect_assets.defs.jobs import prepare_batch_job
    from defect_assets.defs.landing.sensors import ETAG_TAG
    from defect_assets.storage.batches import list_batches

    etags = list_batches(defs.resources["landing_zone"].open())
    done = []
    built = instance.get_materialized_partitions(dg.AssetKey("augmented_training_set"))
    for i, b in enumerate(batch_ids, start=1):
        if b in built and not force:
            say(f"[{i}/{len(batch_ids)}] {b}: already materialized (use --force to rebuild)")
            continue
        t0 = time.perf_counter()
        say(f"[{i}/{len(batch_ids)}] {b}: raw_images -> image_labels -> labeled_patches -> augmented_training_set ...")
        # tagged like the landing-zone sensor's runs, so the sensor knows this manifest is built
        result = run_job(defs, instance, prepare_batch_job, f"batch {b}", run_config, partition_key=b,
                         tags={ETAG_TAG: etags.get(b, "")})
        say(f"    done in {time.perf_counter() - t0:.1f}s (run {result.run_id[:8]})")
        done.append(b)
    return done


ELPV_IMAGE_SIZE = 300
"""ELPV cells are kept at their native 300 px: the default backbone (ImageNet EfficientNet-Lite0)
costs about a ninth of VGG16's conv base per image, so the 1-3 px cracks need not be averaged
away (bench/backbone_experiments.py compares 224 and 300 px on the validation split)."""
KERAS_INPUT = 64
"""The from-scratch CNN and the VGG16 fine-tune train at 64 px from those patches, each within a
time budget: on 2 CPU cores a larger input costs them far more than it gives."""
KERAS_BUDGET_S = 150
"""Seconds of training per Keras family in the main job (the best epoch on validation is kept)."""
ELPV_VIEWS = 1
"""Quarter turns and mirrors of each ELPV cell whose features are computed as extra training rows
for the elastic net. 1: on the validation split, 8 views as rows gave the same ROC AUC with one
test view (0.915 vs 0.915) for 8x the feature time, and 8 test views (+0.007) cost 8 backbone
passes per served image, over the latency budget (bench/results/backbone_experiments.txt)."""
QUICK_LIMIT = 480
"""Images --quick uses unless --limit says otherwise (two batches of 240)."""


def recipe(dataset: str, patch_size: int, image_size: int | None, quick: bool) -> tuple[dict, dict]:
    """(ops of prepare_batch_job, ops of train_models_job) of the main job for a data set."""
    from defect_assets.defs.models.assets import FeatureConfig
    from defect_assets.defs.models.families import ElasticNetConfig, ScratchCNNConfig, VGG16Config
    from defect_assets.defs.patches.assets import AugmentConfig, PatchConfig

    big = image_size is not None and image_size > KERAS_INPUT
    views = 1 if quick or not big else ELPV_VIEWS
    prepare = {"labeled_patches": PatchConfig(size=patch_size, image_size=image_size),
               # 8 views (quarter turns and mirrors) are all the Keras families use on cells
               **({"augmented_training_set": AugmentConfig(angle_step=90)} if big else {}),
               "backbone_features": FeatureConfig(views=views)}
    keras_input = {"input_size": KERAS_INPUT} if big else {}
    if quick:  # a smoke run of the whole chain (tiny models, a few hundred images)
        train = {"scratch_cnn_model": ScratchCNNConfig(filters=[8, 16], epochs=2, images_per_epoch=512,
                                                       batch_size=32, **keras_input),
                 "fine_tuned_vgg16_model": VGG16Config(cut_block=1, epochs=1, fine_tune_epochs=1,
                                                       images_per_epoch=256, batch_size=32, **keras_input),
                 "elastic_net_model": ElasticNetConfig(search_C=[])}
    elif keras_input:
        train = {"scratch_cnn_model": ScratchCNNConfig(time_budget_seconds=KERAS_BUDGET_S, **keras_input),
                 "fine_tuned_vgg16_model": VGG16Config(time_budget_seconds=KERAS_BUDGET_S, **keras_input),
                 "elastic_net_model": ElasticNetConfig(train_views=views)}
    else:
        train = {}
    return prepare, train


def train_models(defs, instance, run_config) -> list[ModelCard]:
    """Run train_models_job (every family on every built batch); returns their cards."""
    from defect_assets.defs.jobs import TRAIN_MODELS_JOB
    from defect_assets.pipeline.family_registry import families
    from defect_assets.storage.registry import ModelRegistry

    t0 = time.perf_counter()
    result = run_job(defs, instance, TRAIN_MODELS_JOB, "training", run_config)
    registry = ModelRegistry(defs.resources["artifact_store"].open())
    versions = [result.output_for_node(asset)["version"].iloc[0] for asset in (f.asset for f in families())]
    say(f"    trained in {time.perf_counter() - t0:.0f}s (run {result.run_id[:8]})")
    return [registry.card(v) for v in versions]


def model_table(cards: list[ModelCard]) -> str:
    rows = [{"family": c.family, "version": c.version, "val_accuracy": c.validation.accuracy,
             "val_balanced_acc": c.validation.balanced_accuracy, "val_roc_auc": c.validation.roc_auc,
             "train_s": round(c.training_seconds)} for c in cards]
    return pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}")


def evaluate_models(defs, instance):
    """Run evaluate_job; returns (test-split table of every family, the champion, failed checks)."""
    import dagster as dg

    from defect_assets.defs.jobs import evaluate_job
    from defect_assets.pipeline.family_registry import families

    t0 = time.perf_counter()
    result = run_job(defs, instance, evaluate_job, "evaluation", dg.RunConfig(loggers=quiet()))
    rows = pd.concat([result.output_for_node(asset) for asset in (f.evaluation for f in families())], ignore_index=True)
    champion = result.output_for_node("champion_model")
    failed = [e.check_name for e in result.get_asset_check_evaluations() if not e.passed]
    say(f"    evaluated in {time.perf_counter() - t0:.0f}s (run {result.run_id[:8]})")
    if not failed:
        table = result.output_for_node("champion_test_predictions")
        misses = int((table["is_defect"] & ~table["predicted_defect"]).sum())
        alarms = int((~table["is_defect"] & table["predicted_defect"]).sum())
        say(f"    the champion's mistakes on the test split: {misses} missed defect(s), {alarms} false alarm(s) "
            "(the most confident ones are pictured on the dashboard)")
    return rows, champion, failed


def evaluation_table(rows: pd.DataFrame, train_seconds: dict[str, float] | None = None) -> str:
    """Test-split figures side by side; accuracy and ROC AUC with their 95% bootstrap intervals,
    each family's training time and its measured p99 latency (one full-size image, one client)."""
    def interval(lo, hi):
        return [f"{a:.3f}-{b:.3f}" for a, b in zip(rows[lo], rows[hi])]

    train_seconds = train_seconds or {}

    table = pd.DataFrame({"family": rows["model_family"], "threshold": rows["threshold"],
                          "accuracy": rows["accuracy"], "acc_ci95": interval("accuracy_ci_low", "accuracy_ci_high"),
                          "bal_acc": rows["balanced_accuracy"], "precision": rows["precision"],
                          "recall": rows["recall"], "f1": rows["f1"], "roc_auc": rows["roc_auc"],
                          "auc_ci95": interval("roc_auc_ci_low", "roc_auc_ci_high"), "pr_auc": rows["pr_auc"],
                          "train_s": [round(train_seconds.get(f, float("nan"))) if f in train_seconds else "-"
                                      for f in rows["model_family"]],
                          "p99_ms": rows["latency_p99_ms"]})
    return table.to_string(index=False, float_format=lambda v: f"{v:.3f}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def start_service(data_dir: Path, port: int, dagster_ui_url: str) -> tuple[int, str, Path]:
    """`defect-assets serve` as a background process (its log in data/serve.log, its pid in
    data/serve.pid), its pages' navigation bar linking to ``dagster_ui_url``; a service left by an
    earlier demo is stopped first. Returns (pid, the service's URL on the port it got, log)."""
    import signal
    import subprocess

    from defect_assets.serving.settings import ServiceSettings

    data_dir.mkdir(parents=True, exist_ok=True)
    pid_file, log_file = data_dir / "serve.pid", data_dir / "serve.log"
    if pid_file.exists():
        old = int(pid_file.read_text().strip() or 0)
        if old and _alive(old):
            os.kill(old, signal.SIGTERM)
            for _ in range(50):
                if not _alive(old):
                    break
                time.sleep(0.1)
    free = hints.free_or_other(port)
    if free != port:
        say(f"    port {port} is taken; using {free}")
    port = free
    log = open(log_file, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "defect_assets.cli", "serve", "--host", "127.0.0.1",
                             "--port", str(port), "--reload-seconds", "1"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                            env=ServiceSettings.environ_with(dagster_ui_url=dagster_ui_url))
    pid_file.write_text(str(proc.pid))
    return proc.pid, f"http://127.0.0.1:{port}", log_file


def deploy_and_score(defs, instance, data_dir: Path, port: int, ui: DagsterUI, examples: list[Path]) -> str:
    """Start the scoring service, promote the champion (deploy_job smoke-tests it over HTTP), and
    score ``examples`` with the client; returns the service's URL."""
    import dagster as dg

    from defect_assets.defs.deploy.assets import DeployConfig
    from defect_assets.defs.jobs import deploy_job
    from defect_assets.serving.client import DefectClient, format_table

    pid, url, log_file = start_service(data_dir, port, ui.url)
    say(f"    scoring service starting at {url} (pid {pid}, log {log_file})")
    result = run_job(defs, instance, deploy_job, "deployment",
                     dg.RunConfig(ops={"deployed_endpoint": DeployConfig(service_url=url)}, loggers=quiet()),
                     hint=f" (service log: {log_file})")
    dep = result.output_for_node("deployed_endpoint").iloc[0]
    say(f"    {url} serves {dep['model_version']} (smoke test p50 {dep['smoke_latency_ms']} ms)")
    say("")
    say(f"Example: {hints.cli_command()} score {shlex.join(str(p) for p in examples)} --url {url}")
    say(format_table(DefectClient(url).predict(examples), [p.name for p in examples]))
    say("")
    say(f"The endpoint keeps serving at {url} (OpenAPI schema at {url}/openapi.json); stop it with: kill {pid}")
    return url


def elpv_example() -> Path:
    """One ELPV cell its raters called defective for sure (probability 1)."""
    from defect_assets.datasets.elpv import elpv_labels, elpv_root

    labels = elpv_labels()
    return elpv_root() / labels.loc[labels["probability"] == 1.0, "path"].iloc[0]


def inspect_photo(url: str, photo, data_dir: Path) -> None:
    """POST the SYNTHETIC photo to the service's /v1/inspect: print the located defects beside the
    drawn ones, and save the heatmap it returns."""
    from defect_assets.demo_photo import inspection_lines, save_heatmap
    from defect_assets.serving.client import DefectClient

    say(f"8. Inspecting one large SYNTHETIC photo the models never saw through POST {url}/v1/inspect: {photo.path}")
    say(f"    drawn on it: {', '.join(f'{d.kind} at ({d.x}, {d.y})' for d in photo.defects)}")
    t0 = time.perf_counter()
    doc = DefectClient(url, timeout=300).inspect(photo.path)
    say(f"    answered in {time.perf_counter() - t0:.1f}s by {doc['model_version']}")
    for line in inspection_lines(doc, photo):
        say(line)
    heatmap = save_heatmap(doc, data_dir)
    say(f"    heatmap (p(defect) of the windows as gray, white = 1; {doc['heatmap_scale']} photo px per heatmap px): "
        f"{heatmap}")
    say(f"    the same from a shell: curl -F file=@{shlex.quote(str(photo.path))} {url}/v1/inspect; in a browser: "
        f"{url}/classify")


def monitor_today(defs, instance, url: str) -> None:
    """Summarize today's prediction log so far (prediction_monitoring, today's partition): the
    dashboard's monitoring section starts with the requests just made (the deployment's smoke
    test and the example)."""
    import datetime as dt

    from defect_assets.defs.jobs import monitoring_job
    from defect_assets.serving.client import DefectClient

    client = DefectClient(url)
    deadline = time.monotonic() + 30
    while (client.model().get("prediction_log") or {}).get("pending", 0) and time.monotonic() < deadline:
        time.sleep(0.2)  # the service writes its log every second
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    result = run_job(defs, instance, monitoring_job, "prediction monitoring", {"loggers": quiet()},
                     partition_key=today)
    rows = result.output_for_node("prediction_monitoring")
    say(f"7. Prediction monitoring for {today} (so far): {int(rows['requests'].sum())} request(s), "
        f"{int(rows['images'].sum())} image(s) scored (the deployment's smoke test and the example); the daily "
        "schedule summarizes each complete day")


def deploy_step(defs, instance, dataset: str, data_dir: Path, port: int, patch_size: int, ui: DagsterUI) -> str:
    """Steps 6-8: deploy and score an example (ELPV: a defective cell; synthetic: a dent and plain
    surface from an unseen photo), monitor today's requests, and (synthetic) inspect the photo."""
    photo = None
    if dataset == "synthetic":
        from defect_assets.demo_photo import write_photo

        photo = write_photo(data_dir, patch_size)
        examples = photo.examples
    else:
        examples = [elpv_example()]
    say(f"6. Deploying the champion behind the scoring service and scoring {len(examples)} image(s)")
    url = deploy_and_score(defs, instance, data_dir, port, ui, examples)
    monitor_today(defs, instance, url)
    if photo is not None:
        inspect_photo(url, photo, data_dir)
    return url


def closing_hints(ui: DagsterUI, url: str | None, data_dir: Path, port: int) -> None:
    """Where to look next, spelled for this machine; the dashboard's address last."""
    from defect_assets.serving.settings import ServiceSettings

    what = "Dagster UI (this job's runs, every asset with its lineage, checks and metadata)"
    if ui.command:
        say(f"{what}: {ui.url}, once started with:\n    {ui.command}")
    else:
        say(f"{what}: {ui.url} {ui.how()}")
    if url:
        say(f"Dashboard (model quality, champions, batches, monitoring, mistakes): {url}/dashboard")
        return
    port = hints.free_or_other(port)
    serve = (shlex.quote(f"{ServiceSettings.env('dagster_ui_url')}={ui.url}")
             + f" {hints.cli_command(data_dir)} serve --port {port}")
    say(f"Dashboard: http://127.0.0.1:{port}/dashboard, once the service is started with:\n    {serve}")


def summarize(store, batch_ids: list[str]) -> str:
    from defect_assets.storage.formats import current_version, read_table

    def table(asset: str, b: str) -> pd.DataFrame | None:
        meta = current_version(store, f"{asset}/{b}")
        return read_table(store, meta["files"]["table"]) if meta else None

    rows, patch_tables, aug_total, views = [], [], 0, set()
    for b in batch_ids:
        aug_meta = current_version(store, f"augmented_training_set/{b}")
        if aug_meta:
            views.add(aug_meta["attrs"].get("per_patch"))
        inv, pt, aug = table("raw_images", b), table("labeled_patches", b), table("augmented_training_set", b)
        rows.append({"batch": b,
                     "images": int((inv["role"] == "image").sum()) if inv is not None else 0,
                     "rejected": int((inv["role"] == "rejected").sum()) if inv is not None else 0,
                     "patches": len(pt) if pt is not None else 0,
                     "augmented": len(aug) if aug is not None else 0})
        if pt is not None:
            patch_tables.append(pt)
        aug_total += len(aug) if aug is not None else 0
    per_batch = pd.DataFrame(rows)
    lines = ["Images per batch:", per_batch.to_string(index=False), ""]
    if patch_tables:
        allp = pd.concat(patch_tables)
        allp["class"] = allp["is_defect"].map({True: "defect", False: "ok"})
        lines += ["Patches per split and class (binary: defect = label >= 0.5 or a defect name):",
                  pd.crosstab(allp["class"], allp["split"], margins=True, margins_name="total").to_string(), ""]
        if allp["label"].nunique() <= 12:
            lines += ["Patches per split and original label:",
                      pd.crosstab(allp["label"], allp["split"], margins=True, margins_name="total").to_string(), ""]
    lines += [f"Augmented training images (train split x {'/'.join(str(v) for v in sorted(views)) or 0} views): "
              f"{aug_total:,}",
              f"Total images ingested: {int(per_batch['images'].sum()):,}"]
    return "\n".join(lines)


def run_demo(dataset: str = "elpv", batches: int = 4, limit: int | None = None, force: bool = False,
             patch_size: int = 64, quick: bool = False, serve: bool = True, port: int = 8000,
             image_size: int | None = None) -> int:
    from defect_assets.storage.env import default_data_dir

    data_dir = default_data_dir()
    t_start = time.perf_counter()
    if quick and limit is None and dataset == "elpv":
        limit, batches = QUICK_LIMIT, min(batches, 2)
    elif quick and dataset == "synthetic":
        batches = min(batches, 2)
    say(f"defect_assets main job: dataset={dataset}, data in {data_dir}, "
        f"Dagster instance in {os.environ.get('DAGSTER_HOME')}")
    from defect_assets.definitions import build_defs

    defs = build_defs()  # after the environment is settled

    res = defs.resources
    landing, artifacts = res["landing_zone"].open(), res["artifact_store"].open()
    say(f"1. Landing zone {landing.url}: seeding {dataset} as {batches} batches")
    batch_ids = seed_landing(dataset, landing, batches, limit, data_dir / "staging")
    instance = _instance()
    from defect_assets.defs.partitions import BATCHES

    known = set(instance.get_dynamic_partitions(BATCHES))
    new = [b for b in batch_ids if b not in known]
    if new:
        instance.add_dynamic_partitions(BATCHES, new)
    say(f"2. Registered {len(new)} new batch partition(s); {len(known | set(batch_ids))} in total")
    say("3. Materializing every asset for every batch")
    import dagster as dg

    from defect_assets.pipeline.family_registry import families

    if image_size is None and dataset == "elpv":
        image_size = ELPV_IMAGE_SIZE
    prepare_ops, train_ops = recipe(dataset, patch_size, image_size, quick)
    say(f"   whole images (image-level labels) at {image_size or patch_size} px, windows around points at "
        f"{patch_size} px")
    prepare = dg.RunConfig(ops=prepare_ops, loggers=quiet())
    built = materialize_batches(defs, instance, batch_ids, force, prepare)
    say("")
    say(summarize(artifacts, batch_ids))
    say("")
    trained = all(instance.get_latest_materialization_event(dg.AssetKey(a)) is not None
                  for a in (f.asset for f in families()))
    if built or force or not trained:
        say(f"4. Training the {len(families())} model families on every batch (train_models_job; live per-epoch "
            "progress below)")
        cards = train_models(defs, instance, dg.RunConfig(ops=train_ops, loggers=quiet("INFO")))
    else:
        from defect_assets.storage.registry import ModelRegistry

        say("4. Models are up to date with the batches (use --force to retrain)")
        reg = ModelRegistry(artifacts)
        cards = [reg.latest(f.name) for f in families()]
    say("")
    say("Validation metrics (validation split, threshold 0.5), side by side:")
    say(model_table(cards))
    say("  (val_balanced_acc: the mean of the per-class recalls; train_s: seconds of training)")
    say("")
    say("5. Evaluating on the held-out test split (threshold chosen on validation), picking the champion")
    rows, champion, failed = evaluate_models(defs, instance)
    say("")
    say(f"Test split ({int(rows['test_patches'].iloc[0])} patches never used for training or choosing; majority-class "
        f"baseline accuracy {rows['majority_baseline'].iloc[0]:.3f}), side by side:")
    say(evaluation_table(rows, {c.family: c.training_seconds for c in cards}))
    say("  (threshold: chosen on validation; acc_ci95, auc_ci95: 95% bootstrap intervals; bal_acc: balanced accuracy; "
        "pr_auc: area under the precision-recall curve; train_s: seconds of training, '-' when not known; p99_ms: one "
        "full-size image at one client through the served scorer, measured now on this machine)")
    say("")
    say(f"Champion: {champion.model_version} ({champion.family}), why: {champion.reason}. Checks: "
        + ("all passed" if not failed else "FAILED " + ", ".join(failed)))
    say(f"HTML report: {artifacts.url}/{champion.report_html}")
    from defect_assets.pipeline.evaluate import HISTORY_CSV

    say(f"Evaluation history (CSV for Excel/PowerBI): {artifacts.url}/{HISTORY_CSV}")
    say("")
    say(f"Artifacts (Parquet tables, .npy arrays, content-addressed images): {artifacts.url}")
    say(f"Landing zone: {landing.url}")
    say("")
    ui = dagster_ui(instance)
    url = None
    if failed:
        say("6. Not deploying: the champion failed its checks (see above)")
    elif serve:
        url = deploy_step(defs, instance, dataset, data_dir, port, patch_size, ui)
    say(f"Main job finished in {time.perf_counter() - t_start:.0f}s.")
    closing_hints(ui, url, data_dir, port)
    sys.stdout.flush()
    return 0
