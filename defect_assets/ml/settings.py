"""The two variables the model library reads itself (in the service, the pipeline and on Dask
workers alike). ``ml/`` imports nothing of the project's other layers, so this class uses
pydantic-settings' own environment source rather than ``storage.settings.EnvSettings``; what it
accepts is the same: ``DEFECT_ASSETS_`` + the field's name, blank = unset, an error names the
variable. Built when used, never cached."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class MlSettings(BaseSettings):
    """Model-library settings shared by every process that scores or trains."""

    model_config = SettingsConfigDict(env_prefix="DEFECT_ASSETS_", env_ignore_empty=True, frozen=True,
                                      use_attribute_docstrings=True)

    onnx_threads: int | None = Field(None, ge=0)
    """ONNX Runtime threads per session (unset: one per core; `0`: ONNX Runtime's own choice)."""
    cache_dir: Path | None = None
    """Cache of the converted EfficientNet-Lite weights (unset: `~/.cache/defect_assets`)."""

    @classmethod
    def load(cls) -> MlSettings:
        try:
            return cls()
        except ValidationError as e:
            prefix = cls.model_config["env_prefix"]
            raise ValueError("; ".join(f"{prefix}{str(err['loc'][0]).upper()}: {err['msg']}"
                                       for err in e.errors(include_url=False))) from None

    def threads(self) -> int:
        return self.onnx_threads if self.onnx_threads is not None else os.cpu_count() or 1
