"""Packaging beyond pyproject.toml: the recipes live in the top-level recipes/ folder (where users browse and copy
them) and ship inside the wheel as package data, deepprobe/recipes/*.toml (deepprobe.options.recipes reads them
from there, or from recipes/ in a source checkout); the ImageNet class names ship as deepprobe/models/imagenet_classes.txt."""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["deepprobe", "deepprobe.*"]) + ["deepprobe.recipes"],
    package_dir={"deepprobe.recipes": "recipes"},
    package_data={"deepprobe.recipes": ["*.toml"], "deepprobe.models": ["imagenet_classes.txt"]},
)
