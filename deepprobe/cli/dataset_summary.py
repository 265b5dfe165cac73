"""The end of a data-set run (robustness on classifiers and on depth models): summary.json and the run's outputs."""
from __future__ import annotations

from pathlib import Path

from ..errors import DeepprobeError


def publish_summary(run, outcome, summary: dict, figures: list[Path], files: list[Path]) -> None:
    """Write summary.json listing results, summary and `figures`; refuse a run that read no image (one line naming
    the file that lists the skipped ones); hand the numbers and `files` to the run's own summary and outputs."""
    folder = outcome.folder
    summary["outputs"] = [str(folder.results), str(folder.summary)] + [str(p) for p in figures]
    folder.write_summary(summary)
    if not summary["n"] and outcome.complete:
        raise DeepprobeError(f"no image of DATA could be read ({summary['n_skipped']} skipped, listed in "
                             f"{folder.summary})")
    run.summary.update({k: v for k, v in summary.items() if k != "outputs"})
    run.outputs[:0] = [folder.results, folder.summary] + [p for p in files if p not in run.outputs]
