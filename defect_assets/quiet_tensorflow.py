"""TensorFlow's start-up notices kept off stderr on machines without a GPU.

TensorFlow 2.21 prints, while `import tensorflow` runs and before absl's logging is initialised, lines
that `TF_CPP_MIN_LOG_LEVEL` does not reach: the oneDNN notice and "Could not find cuda drivers on your
machine, GPU will not be used" (older releases: "failed call to cuInit"). On a CPU-only machine they
are expected, so a user should not read them as an error on every command.

`install()` puts a finder at the front of `sys.meta_path` that wraps the first import of `tensorflow`
(however it is reached: `import keras` imports it too): file descriptor 2 goes to a temporary file
while TensorFlow's package runs, then every captured line that is not one of the known notices is
written back to stderr, so a real error is delayed by the import, never lost. Nothing is installed
where a GPU is present (the notices are worth reading there) or once TensorFlow is imported.

The GPU probe's "failed call to cuInit" comes later, when the first operation runs, through TensorFlow's
own logging: on a CPU-only machine `TF_CPP_MIN_LOG_LEVEL` defaults to 3 for that (as `./run` sets it),
unless the environment already names a level.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile
from pathlib import Path

# the lines TensorFlow prints on every CPU-only import; anything else is passed on
KNOWN_NOTICES = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|oneDNN custom operations are on"
    r"|Could not find cuda drivers on your machine"
    r"|failed call to cuInit"
    r"|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|cpu_feature_guard\.cc"
    r"|To enable the following instructions: .* rebuild TensorFlow"
)


def gpu_present() -> bool:
    return Path("/dev/nvidia0").exists()


@contextlib.contextmanager
def filtered_stderr():
    """Send fd 2 to a temporary file for the block, then write back each line that is not a known notice."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode("utf-8", "replace").splitlines(keepends=True)
                    if not KNOWN_NOTICES.search(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        # the package's own loader stays its __loader__ (resource readers ask it for files)
        module.__loader__ = self._loader
        with filtered_stderr():
            self._loader.exec_module(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != "tensorflow":
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)  # one import only: later ones find the module in sys.modules
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def install() -> bool:
    """Wrap the first TensorFlow import on a CPU-only machine; True when the finder was put in place."""
    if gpu_present() or "tensorflow" in sys.modules:
        return False
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if any(isinstance(finder, _QuietTensorFlowFinder) for finder in sys.meta_path):
        return True
    sys.meta_path.insert(0, _QuietTensorFlowFinder())
    return True
