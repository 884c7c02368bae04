"""Where the scoring service answers, for the deployment asset.

| variable | meaning |
|---|---|
| ``DEFECT_ASSETS_SERVICE_URL`` | the service's base URL, e.g. ``http://127.0.0.1:8000``; unset: promote only |
| ``DEFECT_ASSETS_API_KEY`` | the service's API key, read at run time through ``dg.EnvVar`` |
"""

import dagster as dg

from defect_assets.serving.client import DefectClient
from defect_assets.serving.settings import API_KEY_ENV, ClientSettings


class ScoringService(dg.ConfigurableResource):
    """The scoring web service (``defect-assets serve``) that loads the production model."""

    url: str = ""
    """Base URL of the service; empty: deployment promotes the model and checks nothing over HTTP."""
    api_key: str | None = None
    """The service's API key; pass ``dg.EnvVar("DEFECT_ASSETS_API_KEY")``, never a literal."""
    timeout_seconds: float = 60.0

    def __repr_args__(self):
        return [(k, v) for k, v in super().__repr_args__() if k != "api_key"]

    def client(self, url: str | None = None) -> DefectClient:
        return DefectClient(url or self.url, self.api_key or None, self.timeout_seconds)


def scoring_service_from_env() -> ScoringService:
    """The URL from DEFECT_ASSETS_SERVICE_URL; the key (when the variable is set) through dg.EnvVar,
    so the UI shows the variable's name and never its value."""
    settings = ClientSettings.load()
    return ScoringService(url=settings.service_url, api_key=dg.EnvVar(API_KEY_ENV) if settings.api_key else None)
