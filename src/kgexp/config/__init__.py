"""Config schemas (Hydra structured configs) and their validation."""

from kgexp.config.schemas import register_schemas
from kgexp.config.validation import ConfigError, validate

__all__ = ["ConfigError", "register_schemas", "validate"]
