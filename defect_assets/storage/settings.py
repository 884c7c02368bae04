"""Settings from environment variables, with pydantic-settings: the base every settings class of
the project derives from, and the storage settings (read by the scoring service, the pipeline and
the CLI alike, so they live here, in the bottom layer; ``storage.env`` opens stores with them).

A settings class states each variable once: a field with its type, default and a docstring (the
line docs/settings.md shows). The variable is ``DEFECT_ASSETS_`` + the field's name in capitals,
or the name a field gives as ``Field(json_schema_extra={"env": NAME})``; ``{"env": None}`` marks a
field that only code sets. What every variable shares:

- unset, empty or blank: the default;
- surrounding blanks are ignored (a secret's value is taken as it is);
- yes/no: ``1/true/yes/on`` or ``0/false/no/off``, any case;
- numbers may carry ``_`` (``20_000``);
- a wrong value raises ``InvalidSetting`` naming the variable (never a secret's value).

A settings object is built when it is used (``StorageSettings.load()``: about a millisecond), so a
test that sets a variable with ``monkeypatch.setenv`` sees it at once; nothing is cached.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BeforeValidator, Field, SecretStr, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

PREFIX = "DEFECT_ASSETS_"
# the mapping ``EnvSettings.load(environ)`` reads instead of os.environ, while it builds one object
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("defect_assets_environ", default=None)
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class InvalidSetting(ValueError):
    """A variable holds a value its setting refuses; the message names the variable."""


def parse_flag(value: Any) -> Any:
    """``1/true/yes/on`` -> True, ``0/false/no/off`` -> False (any case, blanks around ignored)."""
    if not isinstance(value, str):
        return value
    raw = value.strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(f"{raw!r} is not a yes/no value (use 1/0, true/false, yes/no, on/off)")


def number(cast: Callable = float, minimum: float | None = None, unit: str = "") -> BeforeValidator:
    """A number from text (``_`` allowed), raised to ``minimum`` when below it (a floor, not an
    error: e.g. a sensor never ticks faster than once a second)."""

    def parse(value: Any) -> Any:
        if isinstance(value, str):
            raw = value.strip()
            try:
                value = cast(raw.replace("_", ""))
            except ValueError:
                kind = "a whole number" if cast is int else "a number"
                raise ValueError(f"{raw!r} is not {kind}{' of ' + unit if unit else ''}") from None
        if minimum is not None and isinstance(value, int | float) and not isinstance(value, bool):
            value = max(cast(minimum), value)
        return value

    return BeforeValidator(parse)


def choice(*allowed: str, hint: str = "") -> BeforeValidator:
    """One of ``allowed`` (any case, blanks around ignored)."""

    def parse(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        raw = value.strip().lower()
        if raw not in allowed:
            raise ValueError(f"{raw!r}: {hint or 'use ' + ' or '.join(repr(a) for a in allowed)}")
        return raw

    return BeforeValidator(parse)


Flag = Annotated[bool, BeforeValidator(parse_flag)]
Int = Annotated[int, number(int)]
Float = Annotated[float, number(float)]


def env(name: str | None) -> Any:
    """``Field`` metadata: the field's variable is ``name`` (None: no variable, set in code only)."""
    return {"env": name}


def env_name(cls: type[BaseSettings], field: str) -> str | None:
    """The variable of one field of a settings class (None: the field has none)."""
    extra = cls.model_fields[field].json_schema_extra
    if isinstance(extra, dict) and "env" in extra:
        return extra["env"]  # type: ignore[return-value]
    return cls.model_config.get("env_prefix", "") + field.upper()


def is_secret(field: FieldInfo) -> bool:
    return field.annotation is SecretStr or SecretStr in typing.get_args(field.annotation)


class EnvironSource(PydanticBaseSettingsSource):
    """The fields' variables from ``os.environ`` (or another mapping): blank ones left out, the
    others stripped of surrounding blanks (a secret's value as it is). Not pydantic-settings' own
    ``EnvSettingsSource``: that one would decode a list setting as JSON, match names in any case
    (or need an alias per field), take a blank value as a value and read only ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str] | None = None):
        super().__init__(settings_cls)
        if environ is None:
            environ = _ENVIRON.get()
        self.environ = os.environ if environ is None else environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        var = env_name(self.settings_cls, field_name)
        raw = self.environ.get(var) if var else None
        if raw is None or not raw.strip():
            return None, field_name, False
        return (raw if is_secret(field) else raw.strip()), field_name, False

    def __call__(self) -> dict[str, Any]:
        found = {}
        for name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, name)
            if value is not None:
                found[key] = value
        return found


def describe(cls: type[BaseSettings], error: ValidationError) -> str:
    """One line per wrong field, naming its variable; an input is shown only when it is a number
    (a text may be a secret or carry one, e.g. a SAS token in a URL)."""
    lines = []
    for err in error.errors(include_url=False):
        field = str(err["loc"][0]) if err["loc"] else ""
        label = (env_name(cls, field) if field in cls.model_fields else None) or field
        msg = str(err["ctx"]["error"]) if err["type"] == "value_error" else err["msg"]
        got = err.get("input")
        shown = f" (got {got!r})" if type(got) in (int, float) else ""
        lines.append(msg + shown if msg.startswith(label) else f"{label}: {msg}{shown}")
    return "; ".join(lines)


class EnvSettings(BaseSettings):
    """The base of the project's settings classes: explicit values over the environment."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, frozen=True, extra="forbid", use_attribute_docstrings=True,
                                      arbitrary_types_allowed=True)

    def __init__(self, **values: Any):
        try:
            super().__init__(**values)
        except ValidationError as e:
            raise InvalidSetting(describe(type(self), e)) from None

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, EnvironSource(settings_cls)

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **values: Any) -> Self:
        """The settings from ``environ`` (default: ``os.environ``), ``values`` over them."""
        token = _ENVIRON.set(environ)
        try:
            return cls(**values)
        finally:
            _ENVIRON.reset(token)

    @classmethod
    def env(cls, field: str) -> str:
        """The variable of ``field``."""
        name = env_name(cls, field)
        if name is None:
            raise KeyError(f"{cls.__name__}.{field} is not read from the environment")
        return name

    @classmethod
    def field_value(cls, field: str, environ: Mapping[str, str] | None = None) -> Any:
        """One field read from ``environ`` (default: ``os.environ``) and validated like the whole
        class would, without building the rest (whose required fields a caller may not have): for a
        process that needs one setting of another process's class, e.g. the main job passing the
        service's Dagster UI address on."""
        info = cls.model_fields[field]
        raw = EnvironSource(cls, environ).get_field_value(info, field)[0]
        if raw is None:
            return info.get_default(call_default_factory=True)
        kind = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        try:
            return TypeAdapter(kind).validate_python(raw)
        except ValidationError as e:
            raise InvalidSetting(f"{cls.env(field)}: {e.errors(include_url=False)[0]['msg']}") from None

    @classmethod
    def environ_with(cls, **values: str) -> dict[str, str]:
        """This process's environment with ``values`` set as the variables of these fields: the
        environment of a child process that reads them (the main job starting the service)."""
        return {**os.environ, **{cls.env(field): value for field, value in values.items()}}

    def with_(self, **changes: Any) -> Self:
        """A copy with ``changes``, validated like the original (the environment is not read again)."""
        return self.load({}, **{**{name: getattr(self, name) for name in type(self).model_fields}, **changes})


def secret_value(secret: SecretStr | None) -> str:
    return secret.get_secret_value() if secret is not None else ""


class StorageSettings(EnvSettings):
    """Where the landing zone and the artifact store live (local folders or Azure Blob Storage)."""

    storage: Annotated[Literal["local", "azure"], choice("local", "azure")] = "local"
    """`local`: folders under the data directory; `azure`: two Blob containers."""
    data_dir: Path | None = None
    """Root of the local landing zone and artifact store (unset: ./data of the working directory)."""
    azure_account_url: str = ""
    """Blob account, `https://<account>.blob.core.windows.net` (no query string: a SAS token has its own variable)."""
    azure_landing_container: str = "landing"
    """Container of the landing zone."""
    azure_artifact_container: str = "artifacts"
    """Container of the artifact store."""
    azure_landing_prefix: str = ""
    """Key prefix inside the landing container (empty: none)."""
    azure_artifact_prefix: str = ""
    """Key prefix inside the artifact container (empty: none)."""
    azure_create_containers: Flag = True
    """Create missing containers (`0`: expect them to exist)."""
    azure_storage_key: SecretStr | None = Field(None, json_schema_extra=env("AZURE_STORAGE_KEY"))
    """Shared account key; first choice of credential."""
    azure_storage_sas_token: SecretStr | None = Field(None, json_schema_extra=env("AZURE_STORAGE_SAS_TOKEN"))
    """SAS token, when no account key is set; neither: DefaultAzureCredential (managed identity, az login)."""
