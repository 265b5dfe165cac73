"""Image files in and out: robust reading, folder/glob expansion, PNG writing and never-overwrite naming."""
from __future__ import annotations

import glob
import json
import warnings
from pathlib import Path

import numpy as np

from .errors import DeepprobeError, ImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif"}
MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb threshold (about 9459 x 9459)


def find_images(inputs: list[str] | str) -> tuple[list[Path], list[tuple[str, str]]]:
    """Expand files, folders and globs into image paths; bad entries become (input, reason) pairs."""
    if isinstance(inputs, (str, Path)):
        inputs = [str(inputs)]
    found: list[Path] = []
    problems: list[tuple[str, str]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not images:
                problems.append((item, "folder contains no images"))
            found.extend(images)
        elif path.is_file():
            found.append(path)
        elif any(ch in item for ch in "*?["):
            matches = sorted(Path(p) for p in glob.glob(item) if Path(p).is_file())
            if not matches:
                problems.append((item, "no file matches this pattern"))
            found.extend(matches)
        else:
            problems.append((item, "no such file or folder"))
    seen: set[Path] = set()
    unique = [p for p in found if not (p.resolve() in seen or seen.add(p.resolve()))]
    return unique, problems


def read_image_array(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """(H,W,3) float32 RGB in [0,1]: EXIF orientation applied, alpha flattened on white, 16-bit kept precise."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if path.is_dir():
        raise ImageError(f"{path}: is a folder, not an image")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: file is empty")
    old_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > max_pixels:
                    raise ImageError(f"{path}: {img.width}x{img.height} is over the {max_pixels:,}-pixel limit")
                img.load()
                img = ImageOps.exif_transpose(img)
                return _to_rgb_float(img)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{path}: image is over the {max_pixels:,}-pixel limit (possible decompression bomb)") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        reason = "file is truncated or corrupt" if "truncat" in str(exc).lower() else f"cannot read image ({exc})"
        raise ImageError(f"{path}: {reason}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit


def _to_rgb_float(img) -> np.ndarray:
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float32)
        arr = arr / (65535.0 if arr.max() > 255 or img.mode.startswith("I;16") else 255.0)
        return np.repeat(arr[..., None].clip(0, 1), 3, axis=2)
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        return np.repeat(arr[..., None].clip(0, 1), 3, axis=2)
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return arr


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS):
    """(1,3,H,W) float tensor in [0,1] at the file's own size."""
    import torch

    arr = read_image_array(path, max_pixels)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).unsqueeze(0)


def to_uint8(image) -> np.ndarray:
    """(3,H,W) or (1,3,H,W) tensor in [0,1] -> (H,W,3) uint8, rounded the way a saved PNG is."""
    if image.dim() == 4:
        image = image[0]
    arr = image.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return arr


def quantize(images):
    """What a batch looks like after an 8-bit PNG round trip: success is judged on this, not on floats."""
    return images.detach().clamp(0, 1).mul(255).round().div(255)


def unique_path(path: str | Path, force: bool = False) -> Path:
    """`path` itself, or path-1, path-2... so nothing existing is overwritten (unless force)."""
    path = Path(path)
    if force or not path.exists():
        return path
    n = 1
    while True:
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        if not candidate.exists() and not candidate.with_suffix(".json").exists():
            return candidate
        n += 1


def save_png(image, path: str | Path, force: bool = False) -> Path:
    """Write a [0,1] tensor (or HxWx3 uint8 array / PIL image) as PNG without clobbering files."""
    from PIL import Image

    target = unique_path(path, force)
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(image, Image.Image):
        pil = image
    elif isinstance(image, np.ndarray):
        pil = Image.fromarray(image)
    else:
        pil = Image.fromarray(to_uint8(image))
    pil.save(target, format="PNG")
    return target


def write_json(data: dict, path: str | Path, force: bool = False) -> Path:
    target = unique_path(path, force)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    return target


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def name_slug(name: str) -> str:
    """A class or other name as a file-name part: anything but letters and digits becomes '_'."""
    return "".join(ch if ch.isalnum() else "_" for ch in name.strip()).strip("_") or "class"


def safe_stem(path: str | Path) -> str:
    stem = Path(path).stem
    cleaned = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem)
    if not cleaned:
        raise DeepprobeError(f"cannot name outputs after {path!r}")
    return cleaned
