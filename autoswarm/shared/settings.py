"""The base of every service's settings: arguments > `AUTOSWARM_*` environment > a TOML file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class LayeredSettings(BaseSettings):
    """Settings read from arguments, then the environment, then an optional TOML file."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls)

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> Self:
        """Settings from arguments (None meaning unset), the environment and a TOML file."""
        given = {k: v for k, v in overrides.items() if v is not None}
        if config_file is None:
            return cls(**given)
        config = SettingsConfigDict(**{**cls.model_config, "toml_file": config_file.expanduser()})
        with_file = type(cls.__name__, (cls,), {"model_config": config})
        settings: Self = with_file(**given)
        return settings
