"""The test suite (a regular package, so `python:tests.MODULE:...` specs import these files even where another
distribution installed a top-level `tests` package into site-packages, as robustbench 1.1.1 does)."""
