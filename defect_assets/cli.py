"""One command line for people: `defect-assets demo | upload | build | synthetic | serve | score`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# the first SIGTERM stops the service: requests still running after this long are cancelled (a heavy
# route stops between two chunks), instead of uvicorn waiting for them without end
GRACEFUL_SHUTDOWN_SECONDS = 5


def _setup_env(args) -> None:
    if getattr(args, "data_dir", None):
        from defect_assets.storage.env import DATA_DIR_ENV

        os.environ[DATA_DIR_ENV] = str(Path(args.data_dir).resolve())  # for this process and the runs it starts
    os.environ.setdefault("DAGSTER_HOME", str(Path.cwd() / ".dagster_home"))
    # CPU only: TensorFlow's GPU probe stays off stderr (defect_assets.quiet_tensorflow, on import)


def cmd_demo(args) -> int:
    from defect_assets.demo import run_demo

    return run_demo(args.dataset, args.batches, args.limit, args.force, args.patch_size, args.quick,
                    serve=not args.no_serve, port=args.port, image_size=args.image_size)


def cmd_upload(args) -> int:
    from defect_assets.storage import LocalObjectStore
    from defect_assets.storage.batches import BatchError, upload_folder
    from defect_assets.storage.env import open_store

    if args.build and args.landing:
        print("error: --build builds from the configured landing zone; use --data-dir instead of --landing",
              file=sys.stderr)
        return 2
    # --landing: a local folder; otherwise the configured landing zone (local, or Azure Blob
    # when DEFECT_ASSETS_STORAGE=azure)
    landing = LocalObjectStore(args.landing) if args.landing else open_store("landing")
    try:
        m = upload_folder(args.folder, landing, args.batch, args.class_folders, args.overwrite,
                          progress=lambda n: print(f"  {n} files uploaded", flush=True))
    except BatchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"batch {m.batch}: {len(m.files)} files in {landing.url}/{m.batch} (manifest written last)", flush=True)
    if args.build:
        return _build(m.batch)
    from defect_assets.hints import cli_command
    from defect_assets.storage.env import default_data_dir

    print(f"build it now with `{cli_command(default_data_dir())} build {m.batch}`, from the Dagster UI, or let the "
          "landing-zone sensor pick it up")
    return 0


def _build(batch: str) -> int:
    from defect_assets.build_batch import build_batch

    try:
        result = build_batch(batch, say=lambda s: print(s, flush=True))
    except LookupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0 if result.success else 1


def cmd_build(args) -> int:
    return _build(args.batch)


def cmd_synthetic(args) -> int:
    from defect_assets.ml.synthetic import write_synthetic_surfaces

    points = write_synthetic_surfaces(args.folder, n_images=args.images, seed=args.seed)
    print(f"wrote {args.images} SYNTHETIC surface photos and {points}")
    return 0


def cmd_serve(args) -> int:
    import logging

    import uvicorn

    from defect_assets.serving.app import create_app
    from defect_assets.serving.settings import ServiceSettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("python_multipart").setLevel(logging.ERROR)  # one warning per malformed upload is noise
    settings = ServiceSettings.from_env()
    if args.reload_seconds:
        settings = settings.with_(reload_seconds=args.reload_seconds)
    print(f"scoring service on http://{args.host}:{args.port} (OpenAPI schema at /openapi.json), models from "
          f"{settings.store.url}", flush=True)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level,
                timeout_keep_alive=30, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS)
    return 0


def cmd_score(args) -> int:
    import json

    from defect_assets.serving.client import DefectClient, ServiceError, format_table

    client = DefectClient.from_env(args.url)
    try:
        results = client.predict(args.images)
    except ServiceError as e:
        from defect_assets.hints import cli_command

        hint = f" (start one with `{cli_command()} serve`)" if e.status == 0 else ""
        print(f"error: {e}{hint}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: cannot read {e.filename}: {e.strerror}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(format_table(results, [str(p) for p in args.images]))
    return 0


def cmd_score_batch(args) -> int:
    from defect_assets.pipeline.batch_scoring import score_batch
    from defect_assets.pipeline.engine import dask_address
    from defect_assets.storage.env import store_config

    config = store_config("artifacts")  # --data-dir reached the environment in _setup_env
    where = f"on Dask at {dask_address()}" if dask_address() else "in this process"
    print(f"scoring batch {args.batch} {where}", file=sys.stderr)
    table = score_batch(config.open(), args.batch, args.version, config,
                        progress=lambda i, n: print(f"  {i}/{n} images", file=sys.stderr))
    if args.out:
        table.to_csv(args.out, index=False)
        print(f"{len(table)} images scored by {table['model_version'].iloc[0] if len(table) else '-'}: {args.out}")
    else:
        print(table.to_csv(index=False), end="")
    return 0


def cmd_export(args) -> int:
    from defect_assets.pipeline.export import export_registered
    from defect_assets.storage.env import open_store

    bundle = export_registered(open_store("artifacts"), args.version, args.format, args.out, args.threshold)
    print(f"{bundle.folder} ({bundle.size_bytes:,} bytes; threshold {bundle.doc['threshold']} from "
          f"{bundle.doc['threshold_source']})\n{bundle.zip_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="defect-assets", description=__doc__)
    p.add_argument("--data-dir", help="landing zone + artifact store root (default ./data or $DEFECT_ASSETS_DATA_DIR)")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="run the main job on the embedded default (real ELPV data)")
    d.add_argument("--dataset", choices=["elpv", "synthetic"], default="elpv")
    d.add_argument("--batches", type=int, default=4, help="how many landing-zone batches to seed (default 4)")
    d.add_argument("--limit", type=int, help="use only this many images (quick look)")
    d.add_argument("--patch-size", type=int, default=64, help="windows around points and boxes (default 64)")
    d.add_argument("--image-size", type=int, help="whole images of image-level labels (default: 300 for ELPV, "
                                                  "else the patch size)")
    d.add_argument("--force", action="store_true", help="rebuild batches that are already materialized")
    d.add_argument("--quick", action="store_true", help="tiny models: a smoke run of the whole chain")
    d.add_argument("--no-serve", action="store_true", help="do not start the scoring service at the end")
    d.add_argument("--port", type=int, default=8000, help="port of the scoring service started at the end (8000)")
    d.set_defaults(func=cmd_demo)

    u = sub.add_parser("upload", help="turn a folder into a landing-zone batch")
    u.add_argument("folder")
    u.add_argument("--batch", help="batch id (default: the folder's name)")
    u.add_argument("--landing", help="landing zone folder (default: <data-dir>/landing)")
    u.add_argument("--class-folders", dest="class_folders", action="store_true", default=None,
                   help="sub-folder names are class labels (DIGITS style)")
    u.add_argument("--no-class-folders", dest="class_folders", action="store_false")
    u.add_argument("--overwrite", action="store_true", help="replace an existing batch (a new version)")
    u.add_argument("--build", action="store_true", help="then build it in this process (see `build`)")
    u.set_defaults(func=cmd_upload)

    bb = sub.add_parser("build", help="register an uploaded batch and materialize its assets in this process "
                                      "(what the landing-zone sensor would run; no daemon needed)")
    bb.add_argument("batch")
    bb.set_defaults(func=cmd_build)

    s = sub.add_parser("synthetic", help="write SYNTHETIC surface photos + points.csv to a folder")
    s.add_argument("folder")
    s.add_argument("--images", type=int, default=24)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_synthetic)

    v = sub.add_parser("serve", help="run the scoring web service on the production model")
    v.add_argument("--host", default="127.0.0.1")
    v.add_argument("--port", type=int, default=8000)
    v.add_argument("--reload-seconds", type=float, help="poll the production pointer this often (default 5)")
    v.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    v.set_defaults(func=cmd_serve)

    c = sub.add_parser("score", help="score images with a running scoring service")
    c.add_argument("images", nargs="+", metavar="IMAGE")
    c.add_argument("--url", help="service URL (default $DEFECT_ASSETS_SERVICE_URL or http://127.0.0.1:8000)")
    c.add_argument("--json", action="store_true", help="print the results as JSON")
    c.set_defaults(func=cmd_score)

    b = sub.add_parser("score-batch", help="score every image of an ingested batch without the service "
                                           "(on Dask when DEFECT_ASSETS_DASK_ADDRESS is set)")
    b.add_argument("batch")
    b.add_argument("--version", help="registered model version (default: the production model)")
    b.add_argument("--out", help="write the table as CSV here (default: to standard output)")
    b.set_defaults(func=cmd_score_batch)

    x = sub.add_parser("export", help="export a registered model as an ONNX or OpenVINO bundle (folder + zip)")
    x.add_argument("version", help="registered model version")
    x.add_argument("--format", choices=["onnx", "openvino"], default="onnx")
    x.add_argument("--out", required=True, help="folder the bundle and its zip are written into")
    x.add_argument("--threshold", type=float, help="decision threshold (default: the production pointer's when it "
                                                   "names this version, else 0.5)")
    x.set_defaults(func=cmd_export)

    args = p.parse_args(argv)
    _setup_env(args)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
