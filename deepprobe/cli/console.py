"""The two consoles every command writes to: results on stdout, progress and errors on stderr."""
from __future__ import annotations

from rich.console import Console

err_console = Console(stderr=True, highlight=False, soft_wrap=True)  # an error stays one line, however long
out_console = Console(highlight=False)
