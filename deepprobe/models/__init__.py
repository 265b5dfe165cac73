"""Model sources and the ModelBundle every technique takes."""
from .bundle import ModelBundle
from .sources import BUNDLED, DEFAULT_MODEL, SPEC_FORMS, load_model

__all__ = ["ModelBundle", "load_model", "BUNDLED", "DEFAULT_MODEL", "SPEC_FORMS"]
