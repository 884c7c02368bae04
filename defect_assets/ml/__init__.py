"""Pure NumPy / Pillow / TensorFlow / scikit-learn code: no Dagster import in this package."""
