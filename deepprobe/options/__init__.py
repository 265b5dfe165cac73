"""Each command's defaults, in one place shared by the CLI, the Python API and recipes (torch-free).

A command NAME keeps its options dataclass in `deepprobe/options/NAME.py` as `Options`, and the valid range of
every numeric field beside it as `RANGES` (ranges.py). values.py resolves them (dataclass default < recipe <
what the user typed); recipes.py finds and reads the named presets.
"""
from __future__ import annotations

from .recipes import Recipe, RecipeFile, bundled_recipe_dir, list_recipes, load_recipe, recipe_dirs, recipe_files
from .values import coerce, field_kind, options_for, parse_number, resolve

__all__ = ["Recipe", "RecipeFile", "bundled_recipe_dir", "coerce", "field_kind", "list_recipes", "load_recipe",
           "options_for", "parse_number", "recipe_dirs", "recipe_files", "resolve"]
