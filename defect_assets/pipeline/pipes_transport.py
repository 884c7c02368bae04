"""The variables that tell the training entry point (``defect_assets.pipes_training``) how to talk
to Dagster under Pipes; shared by it and by the Dagster side that sets them
(``defs/models/pipes.py``). ``azure_blob``: context and messages through Blob Storage."""

from __future__ import annotations

from defect_assets.pipeline.settings import PipelineSettings

PIPES_TRANSPORT_ENV = PipelineSettings.env("pipes_transport")
PIPES_ACCOUNT_URL_ENV = PipelineSettings.env("pipes_account_url")
PIPES_MESSAGE_INTERVAL_ENV = PipelineSettings.env("pipes_message_interval")
"""Seconds between two uploads of message chunks (azure_blob transport); default 10."""
