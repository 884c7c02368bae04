"""defect_assets: visual defect classification as a Dagster asset graph."""

from defect_assets import quiet_tensorflow as _quiet_tensorflow

__version__ = "0.1.0"

# TensorFlow's start-up notices ("Could not find cuda drivers ...") off stderr on CPU-only machines
_quiet_tensorflow.install()
