"""Image reading: every format users have, EXIF, alpha, 16-bit; each bad input is one clear error."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from deepprobe.errors import ImageError
from deepprobe.io import find_images, quantize, read_image, read_image_array, save_png, unique_path


@pytest.fixture(scope="module")
def photo(examples) -> Image.Image:
    return Image.open(examples / "cat.jpg").convert("RGB").resize((96, 64))


def close_to(arr: np.ndarray, ref: Image.Image, tol: float) -> bool:
    return float(np.abs(arr - np.asarray(ref, dtype=np.float32) / 255).mean()) < tol


@pytest.mark.parametrize("fmt,suffix,tol", [("JPEG", ".jpg", 0.03), ("PNG", ".png", 1e-6), ("WEBP", ".webp", 0.04),
                                            ("TIFF", ".tif", 1e-6), ("BMP", ".bmp", 1e-6)])
def test_rgb_formats_read_back(photo, tmp_path, fmt, suffix, tol):
    path = tmp_path / f"p{suffix}"
    photo.save(path, format=fmt)
    arr = read_image_array(path)
    assert arr.shape == (64, 96, 3) and arr.dtype == np.float32
    assert close_to(arr, photo, tol)


def test_grayscale_and_palette_pngs_become_rgb(photo, tmp_path):
    photo.convert("L").save(tmp_path / "gray.png")
    gray = read_image_array(tmp_path / "gray.png")
    assert gray.shape == (64, 96, 3) and np.allclose(gray[..., 0], gray[..., 2])
    photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(tmp_path / "pal.png")
    assert close_to(read_image_array(tmp_path / "pal.png"), photo, 0.05)


def test_sixteen_bit_png_keeps_its_precision(tmp_path):
    ramp = (np.linspace(0, 65535, 128, dtype=np.float64)[None, :].repeat(8, 0)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "ramp16.png")
    arr = read_image_array(tmp_path / "ramp16.png")
    assert np.allclose(arr[0, :, 0], ramp[0] / 65535, atol=1e-6)  # finer than 8-bit steps
    assert arr.max() == pytest.approx(1.0)


def test_alpha_is_flattened_on_white(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255  # red...
    rgba[:, :4, 3] = 255  # ...opaque on the left, fully transparent on the right
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    arr = read_image_array(tmp_path / "a.png")
    assert np.allclose(arr[:, :4], [1, 0, 0]) and np.allclose(arr[:, 4:], [1, 1, 1])


def test_exif_orientation_is_honoured(photo, tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    photo.save(tmp_path / "rot.jpg", exif=exif.tobytes())
    assert read_image_array(tmp_path / "rot.jpg").shape == (96, 64, 3)
    assert read_image(tmp_path / "rot.jpg").shape == (1, 3, 96, 64)


def test_bad_inputs_are_one_clear_error_each(photo, tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("this is not an image")
    photo.save(tmp_path / "whole.jpg")
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "sub").mkdir()
    cases = {"missing.png": "no such file", "empty.png": "empty", "notes.jpg": "not an image",
             "cut.jpg": "truncated", "sub": "folder"}
    for name, words in cases.items():
        with pytest.raises(ImageError, match=words) as info:
            read_image_array(tmp_path / name)
        assert "\n" not in str(info.value) and name in str(info.value)


def test_decompression_bombs_are_refused_before_decoding(tmp_path):
    Image.new("1", (9600, 9600)).save(tmp_path / "bomb.png")  # 92 M pixels, a few KB on disk
    with pytest.raises(ImageError, match="pixel limit"):
        read_image_array(tmp_path / "bomb.png")
    Image.new("RGB", (40, 30)).save(tmp_path / "small.png")
    with pytest.raises(ImageError, match="1,000-pixel limit"):
        read_image_array(tmp_path / "small.png", max_pixels=1000)


def test_folders_and_globs_expand_and_report_what_is_empty(examples, tmp_path):
    found, problems = find_images([str(examples)])
    assert {p.name for p in found} >= {"cat.jpg", "coffee.jpg"} and not problems
    found, problems = find_images([str(examples / "c*.jpg"), str(examples / "cat.jpg")])
    assert [p.name for p in found] == ["cat.jpg", "coffee.jpg"]  # sorted, duplicates dropped
    (tmp_path / "readme.txt").write_text("x")
    found, problems = find_images([str(tmp_path), str(tmp_path / "*.png"), "no/such/file.jpg"])
    assert not found
    assert [reason for _, reason in problems] == ["folder contains no images", "no file matches this pattern",
                                                  "no such file or folder"]


def test_saving_never_overwrites_unless_forced(tmp_path):
    import torch

    img = torch.rand(3, 8, 8)
    first = save_png(img, tmp_path / "x.png")
    second = save_png(img, tmp_path / "x.png")
    assert (first.name, second.name) == ("x.png", "x-1.png")
    before = first.read_bytes()
    assert save_png(torch.zeros(3, 8, 8), tmp_path / "x.png", force=True) == first
    assert first.read_bytes() != before
    assert unique_path(tmp_path / "x.png").name == "x-2.png"


def test_quantize_is_the_png_round_trip(tmp_path):
    import torch

    img = torch.rand(1, 3, 16, 16)
    back = read_image(save_png(img, tmp_path / "q.png"))
    assert torch.equal(quantize(img), back)
