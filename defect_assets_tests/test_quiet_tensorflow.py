"""TensorFlow's CPU-only start-up notices stay off stderr; anything else it prints still reaches the user."""

import os
import subprocess
import sys

import pytest

from defect_assets.quiet_tensorflow import filtered_stderr, gpu_present


@pytest.mark.skipif(gpu_present(), reason="the notices are kept where a GPU is present")
def test_importing_keras_through_defect_assets_prints_no_gpu_probe_notice():
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}  # as a user's shell has it
    code = "import defect_assets, keras; print(int(keras.ops.convert_to_numpy(keras.ops.add(2, 3))))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "5"
    for notice in ("Could not find cuda drivers", "cuInit", "oneDNN custom operations", "absl::InitializeLog"):
        assert notice not in done.stderr, done.stderr
    # without the package first, TensorFlow does print them: the test above would see it
    plain = subprocess.run([sys.executable, "-c", "import tensorflow"], env=env, capture_output=True,
                           text=True, timeout=600)
    assert "Could not find cuda drivers" in plain.stderr or "cuInit" in plain.stderr, plain.stderr


def test_a_line_that_is_not_a_known_notice_is_written_back(capfd):
    with filtered_stderr():
        os.write(2, b"I0000 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.\n")
        os.write(2, b"E0000 something.cc:1] a real error\n")
    err = capfd.readouterr().err
    assert "a real error" in err
    assert "cuda drivers" not in err
