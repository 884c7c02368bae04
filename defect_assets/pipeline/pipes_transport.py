"""The variables that tell the training entry point (``defect_assets.pipes_training``) how to talk
to Dagster under Pipes; shared by it and by the Dagster side that sets them
(``defs/models/pipes.py``). ``azure_blob``: context and messages through Blob Storage."""

from __future__ import annotations

PIPES_TRANSPORT_ENV = "DEFECT_ASSETS_PIPES_TRANSPORT"
PIPES_ACCOUNT_URL_ENV = "DEFECT_ASSETS_PIPES_ACCOUNT_URL"
PIPES_MESSAGE_INTERVAL_ENV = "DEFECT_ASSETS_PIPES_MESSAGE_INTERVAL"
"""Seconds between two uploads of message chunks (azure_blob transport); default 10."""
