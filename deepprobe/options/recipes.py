"""Recipes: named presets of one command's options, in TOML files (`command = "..."`, `description`, [options]).

Named recipes are looked up in three folders, the first that has the name winning:
  1. ./recipes/ in the working directory (a project's own presets),
  2. $XDG_CONFIG_HOME/deepprobe/recipes/ (default ~/.config/deepprobe/recipes/: a user's presets),
  3. the bundled ones: the repository's top-level recipes/ folder, shipped inside the wheel as deepprobe/recipes/.
So a user's recipe with a bundled name shadows the bundled one (`deepprobe recipes` says so).
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
from pathlib import Path
from typing import Any

from ..errors import DeepprobeError
from .values import coerce, options_for, parse_input_size

# model options a recipe may set beside the command's own (typed --input-size still wins)
MODEL_KEYS = ("input_size",)
WORKING_DIRECTORY, USER_CONFIG, BUNDLED, FILE = "working directory", "user config", "bundled", "file"


def bundled_recipe_dir() -> Path:
    """deepprobe/recipes/ inside an installed wheel; the top-level recipes/ folder of a source checkout."""
    package = Path(__file__).resolve().parent.parent
    packaged = package / "recipes"
    return packaged if packaged.is_dir() else package.parent / "recipes"


def user_recipe_dir() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(config) / "deepprobe" / "recipes"


def recipe_dirs() -> list[tuple[str, Path]]:
    """(origin, folder) in lookup order. A folder reached twice (./recipes in a source checkout is the bundled
    one) is kept once, under its later origin."""
    dirs = [(WORKING_DIRECTORY, Path.cwd() / "recipes"), (USER_CONFIG, user_recipe_dir()), (BUNDLED, bundled_recipe_dir())]
    return [(origin, folder) for i, (origin, folder) in enumerate(dirs)
            if folder.resolve() not in {later.resolve() for _, later in dirs[i + 1:]}]


@dataclasses.dataclass
class RecipeFile:
    """Where a named recipe is read from, and the same-named files further down the lookup that it hides."""

    name: str
    path: Path
    origin: str
    shadows: list[RecipeFile] = dataclasses.field(default_factory=list)


def recipe_files() -> list[RecipeFile]:
    """One entry per recipe name (the winning file), sorted by name."""
    found: dict[str, RecipeFile] = {}
    for origin, folder in recipe_dirs():
        for path in sorted(folder.glob("*.toml")) if folder.is_dir() else []:
            if path.stem in found:
                found[path.stem].shadows.append(RecipeFile(path.stem, path, origin))
            else:
                found[path.stem] = RecipeFile(path.stem, path, origin)
    return [found[name] for name in sorted(found)]


@dataclasses.dataclass
class Recipe:
    name: str
    command: str
    description: str
    options: dict[str, Any]
    path: Path
    origin: str = FILE
    shadows: list[RecipeFile] = dataclasses.field(default_factory=list)
    model: dict[str, Any] = dataclasses.field(default_factory=dict)  # MODEL_KEYS found in [options]


def list_recipes() -> list[Recipe]:
    return [read_recipe(entry) for entry in recipe_files()]


def load_recipe(name_or_path: str, command: str | None = None) -> Recipe:
    """A recipe by name (see the module docstring for where names are found) or by path, checked against the
    command's Options (keys, types and ranges)."""
    path = Path(name_or_path)
    if path.suffix or path.exists():
        if not path.is_file():
            raise DeepprobeError(f"no recipe file {name_or_path!r}")
        return read_recipe(RecipeFile(path.stem, path, FILE), command)
    entries = {entry.name: entry for entry in recipe_files()}
    if name_or_path not in entries:
        known = ", ".join(entries) or "none"
        raise DeepprobeError(f"unknown recipe {name_or_path!r} (known: {known})")
    return read_recipe(entries[name_or_path], command)


def read_recipe(entry: RecipeFile, command: str | None = None) -> Recipe:
    path = entry.path
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DeepprobeError(f"{path}: not valid TOML ({exc})") from None
    recipe_command = data.get("command")
    if not isinstance(recipe_command, str):
        raise DeepprobeError(f"{path}: a recipe needs a `command = \"...\"` line")
    if command is not None and recipe_command != command:
        raise DeepprobeError(f"{path}: recipe is for `{recipe_command}`, not `{command}`")
    options = data.get("options", {})
    if not isinstance(options, dict):
        raise DeepprobeError(f"{path}: [options] must be a table")
    unknown = set(data) - {"command", "description", "options"}
    if unknown:
        raise DeepprobeError(f"{path}: unknown key {sorted(unknown)[0]!r} (a recipe has command, description, [options])")
    options_cls = options_for(recipe_command)
    if options_cls is None:
        raise DeepprobeError(f"{path}: command {recipe_command!r} takes no recipe")
    options = dict(options)
    model = {key: options.pop(key) for key in MODEL_KEYS if key in options}
    if "input_size" in model:
        height, width = parse_input_size(model["input_size"], f"{path}: input_size")
        model["input_size"] = f"{height},{width}"
    coerce(options_cls, options, str(path))
    return Recipe(entry.name, recipe_command, str(data.get("description", "")), options, path, entry.origin,
                  list(entry.shadows), model)
