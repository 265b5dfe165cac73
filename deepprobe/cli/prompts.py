"""`--text` and `--labels` for image-text models (CLIP): the prompts its logits range over.

classify, explain, fool and evaluate take them; with a CLIP model they are required, with any other model
they are an error (one line), so a typo in --model never silently ignores them.
"""
from __future__ import annotations

from pathlib import Path

import typer

from ..errors import DeepprobeError
from .common import err_console


def text_option():
    return typer.Option(None, "--text", help="CLIP: a text prompt to score, e.g. 'a photo of a cat'; repeat for "
                                             "several (the classes of an image-text model).",
                        rich_help_panel="Image-text (CLIP)")


def labels_option():
    return typer.Option(None, "--labels", help="CLIP: a file of class names, one a line; each becomes the prompt "
                                               "'a photo of a {name}.'", rich_help_panel="Image-text (CLIP)")


def read_label_file(path: str) -> list[str]:
    """Class names, one a line (blank lines and # comments skipped), in file order, duplicates dropped."""
    file = Path(path)
    if not file.is_file():
        raise DeepprobeError(f"--labels file not found: {path}")
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DeepprobeError(f"cannot read --labels file {path}: {exc}") from exc
    names = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not names:
        raise DeepprobeError(f"--labels file {path} holds no class names")
    return list(dict.fromkeys(names))


def apply_prompts(run, bundle, texts: list[str] | None, labels: str | None, extra: list[str] = ()) -> list[str]:
    """Give a CLIP bundle its prompts (--text, then the --labels prompts, then `extra`, e.g. a fool target);
    returns the prompts. For other models --text/--labels are refused."""
    from ..models.clip import PROMPT_TEMPLATE, prompts_from_labels

    texts = [t for t in (texts or []) if t is not None]
    if bundle.task != "image-text":
        if texts or labels:
            raise DeepprobeError(f"--text/--labels apply to image-text models (CLIP) only; {bundle.spec} is a "
                                 f"{bundle.task} model")
        return []
    prompts, names = list(texts), list(texts)
    if labels:
        label_names = read_label_file(labels)
        prompts += prompts_from_labels(label_names)
        names += label_names
        if run.show_progress:
            err_console.print(f"[dim]--labels: {len(label_names)} class names from {labels} scored as "
                              f"'{PROMPT_TEMPLATE.format('{name}')}'[/dim]")
    for text in extra:
        if text not in prompts and text not in names:
            prompts.append(text)
            names.append(text)
    if not prompts:
        raise DeepprobeError(f"{bundle.spec} is an image-text model (CLIP): give the prompts to score with "
                             "--text (repeatable) or --labels FILE")
    unique = dict(zip(prompts, names))  # a prompt given twice is scored once
    bundle.set_prompts(list(unique), list(unique.values()))
    run.summary["prompts"] = list(unique)
    if labels:
        run.summary["prompt_template"] = PROMPT_TEMPLATE
    return list(unique)
