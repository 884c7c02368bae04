"""defect_assets: visual defect classification as a Dagster asset graph."""

__version__ = "0.1.0"
