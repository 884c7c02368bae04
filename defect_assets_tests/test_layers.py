"""The layers point one way (cli/demo -> defs -> serving -> pipeline -> ml | storage), and the
scoring service runs and answers with Dagster impossible to import."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from defect_assets_tests.helpers.serving import model_registry

PACKAGE = Path(__file__).resolve().parents[1] / "defect_assets"
# what each layer may import, beside itself and the standard library / third parties
ALLOWED = {
    "ml": {"ml"},
    "storage": {"storage"},
    "pipeline": {"pipeline", "ml", "storage"},
    "serving": {"serving", "ml", "storage"},
    "datasets": {"datasets", "storage"},
    "defs": {"defs", "pipeline", "serving", "ml", "storage", "datasets"},
}
NO_DAGSTER = ("ml", "storage", "pipeline", "serving", "datasets")
# single modules a layer may import from a layer it may not otherwise: the registry stores and
# returns ModelCard records (pure pydantic, nothing else of ml/)
ALSO_ALLOWED = {"storage": {"defect_assets.ml.records"}}


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_every_layer_imports_only_the_layers_below_it():
    wrong = []
    for layer, allowed in ALLOWED.items():
        files = sorted((PACKAGE / layer).rglob("*.py"))
        assert files, layer
        for f in files:
            for mod in imports_of(f):
                parts = mod.split(".")
                if parts[0] == "defect_assets" and len(parts) > 1 and parts[1] not in allowed \
                        and mod not in ALSO_ALLOWED.get(layer, ()):
                    wrong.append(f"{f.relative_to(PACKAGE)} imports {mod}")
                if layer in NO_DAGSTER and parts[0].startswith("dagster"):
                    wrong.append(f"{f.relative_to(PACKAGE)} imports {mod}")
    assert wrong == []


def routes_imports(path: Path) -> set[str]:
    """The ``serving.routes`` modules a file imports (absolute or relative, at any depth)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("defect_assets.serving.routes.")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: inside routes/, anything from "." or ".x" is another router
                found |= {f".{node.module or ''}:{a.name}" for a in node.names} if node.level == 1 else set()
            elif node.module == "defect_assets.serving.routes":
                found |= {f"{node.module}.{a.name}" for a in node.names}
            elif node.module and node.module.startswith("defect_assets.serving.routes."):
                found.add(node.module)
    return found


def test_no_router_imports_another_router():
    """What routes share lives in serving/ (dependencies, schemas, web, windows), never in a router."""
    routers = sorted((PACKAGE / "serving" / "routes").glob("*.py"))
    assert {f.stem for f in routers} >= {"scoring", "labeling", "annotations", "pages"}
    wrong = {f.name: routes_imports(f) for f in routers if routes_imports(f)}
    assert wrong == {}


def test_the_router_rule_catches_a_router_import(tmp_path):
    f = tmp_path / "annotations.py"
    f.write_text("from defect_assets.serving.routes.labeling import labeler\n"
                 "def later():\n    from defect_assets.serving.routes import scoring\n")
    assert routes_imports(f) == {"defect_assets.serving.routes.labeling", "defect_assets.serving.routes.scoring"}
    (tmp_path / "rel.py").write_text("from .labeling import html_page\n")
    assert routes_imports(tmp_path / "rel.py") == {".labeling:html_page"}


def test_the_modules_another_layer_may_import_import_nothing_of_the_package():
    """An exception stays narrow: ml/records.py (what storage/registry.py may import) leans on
    pydantic only, so storage does not get the rest of ml/ through it."""
    for modules in ALSO_ALLOWED.values():
        for mod in modules:
            path = PACKAGE.joinpath(*mod.split(".")[1:]).with_suffix(".py")
            assert [m for m in imports_of(path) if m.startswith("defect_assets")] == [], mod


def test_the_layer_rule_catches_a_climb(tmp_path):
    """The scan above sees an import hidden inside a function (the shape of the old circle)."""
    f = tmp_path / "settings.py"
    f.write_text("def from_env():\n    from defect_assets.defs.resources import default_resources\n")
    assert "defect_assets.defs.resources" in imports_of(f)


SERVICE_WITHOUT_DAGSTER = textwrap.dedent('''
    import importlib.abc, json, socket, sys, threading, time

    class NoDagster(importlib.abc.MetaPathFinder):
        """As if Dagster were not installed: any attempt to import it fails."""
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0].startswith("dagster"):
                raise ModuleNotFoundError(f"No module named {name!r}")
            return None

    sys.meta_path.insert(0, NoDagster())
    import uvicorn
    from defect_assets.serving.app import create_app
    from defect_assets.serving.client import DefectClient
    from defect_assets.serving.settings import ServiceSettings

    app = create_app(ServiceSettings.from_env().with_(reload_seconds=0.2))
    sock = socket.socket(); sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    client = DefectClient(f"http://127.0.0.1:{sock.getsockname()[1]}")
    deadline = time.monotonic() + 60
    while not client.ready():
        assert time.monotonic() < deadline, "the service did not get ready"
        time.sleep(0.1)
    result = client.predict([sys.argv[1]])[0]
    print(json.dumps({"result": result, "dagster": sorted(m for m in sys.modules if m.startswith("dagster"))}),
          flush=True)
    # a clean shutdown (lifespan: the prediction log's last flush, the loader thread) before the
    # interpreter exits: TensorFlow threads torn down mid-call at exit can crash the process
    server.should_exit = True
    thread.join(timeout=60)
    assert not thread.is_alive(), "the service did not shut down"
''')


@pytest.mark.slow
def test_the_service_answers_a_prediction_without_dagster(tmp_path):
    from defect_assets.ml.scorer import load_registered
    from defect_assets_tests.conftest import png_bytes, smooth_image

    _, registry, versions = model_registry(tmp_path / "data")
    registry.promote(versions["a"], threshold=0.4)
    image = tmp_path / "part.png"
    image.write_bytes(png_bytes(smooth_image(48, 40, seed=5)))
    env = {**os.environ, "DEFECT_ASSETS_DATA_DIR": str(tmp_path / "data"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("DEFECT_ASSETS_STORAGE", None)
    out = subprocess.run([sys.executable, "-c", SERVICE_WITHOUT_DAGSTER, str(image)], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["dagster"] == []
    want = load_registered(registry, versions["a"]).predict_images([image.read_bytes()])[0]
    assert doc["result"]["model_version"] == versions["a"]
    assert abs(doc["result"]["probabilities"]["defect"] - float(want[1])) < 1e-5
