"""Binary object masks for the localisation metrics: one per image, found by file stem in a folder (`--masks
DIR`) or named by a `mask` column of the manifest, and brought to the model's input geometry like the image."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DeepprobeError, ImageError
from ..io import IMAGE_SUFFIXES

if TYPE_CHECKING:  # torch is imported where it is used (a fast CLI start)
    import torch

MASK_COLUMN = "mask"


def manifest_masks(manifest: Path) -> dict[str, str]:
    """{resolved image path: mask path} from a .csv/.jsonl manifest's `mask` column (empty when it has none);
    relative paths are relative to the manifest's folder, like the image paths."""
    base = manifest.parent
    rows: list[tuple[str, str]] = []
    text = manifest.read_text(encoding="utf-8-sig")
    if manifest.suffix.lower() == ".csv":
        for row in csv.DictReader(text.splitlines()):
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
            if row.get("path") and row.get(MASK_COLUMN):
                rows.append((row["path"], row[MASK_COLUMN]))
    else:
        for line in text.splitlines():
            entry = json.loads(line) if line.strip() else {}
            if isinstance(entry, dict) and entry.get("path") and entry.get(MASK_COLUMN):
                rows.append((entry["path"], entry[MASK_COLUMN]))
    return {str((base / p).resolve()): str(base / m) for p, m in rows}


class MaskSource:
    """Where each image's mask is: a folder searched by stem, or a manifest's column."""

    def __init__(self, folder: str | Path | None = None, by_path: dict[str, str] | None = None):
        self.folder = Path(folder) if folder is not None else None
        self.by_path = by_path or {}
        self.by_stem: dict[str, Path] = {}
        if self.folder is not None:
            if not self.folder.is_dir():
                raise DeepprobeError(f"--masks {self.folder}: no such folder")
            for path in sorted(self.folder.rglob("*")):
                if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                    self.by_stem.setdefault(path.stem, path)

    def __bool__(self) -> bool:
        return bool(self.by_stem or self.by_path or self.folder is not None)

    def find(self, image: str) -> Path:
        if str(Path(image).resolve()) in self.by_path:
            return Path(self.by_path[str(Path(image).resolve())])
        found = self.by_stem.get(Path(image).stem)
        if found is None:
            where = f"in {self.folder} (a file named {Path(image).stem}.png or another image type)" \
                if self.folder is not None else "in the manifest's mask column"
            raise DeepprobeError(f"no mask for {image} {where}")
        return found

    def check(self, images) -> None:
        """Every image has a mask file (one line naming the first that has none), before any work."""
        for image in images:
            if image is not None and not self.find(image).is_file():
                raise DeepprobeError(f"mask {self.find(image)} of {image}: no such file")

    def load(self, images, preprocess) -> "torch.Tensor":
        """(N,H,W) bool masks at the model's input geometry (resized and cropped as the images, then > 0.5)."""
        import torch

        from ..io import read_image

        out = []
        for image in images:
            path = self.find(image)
            try:
                mask = read_image(path).mean(1, keepdim=True).expand(-1, 3, -1, -1)
            except ImageError as exc:
                raise DeepprobeError(f"mask of {image}: {exc}") from None
            if preprocess is not None:
                mask = preprocess.geometry(mask)
            out.append(mask[0, 0] > 0.5)
        return torch.stack(out)
