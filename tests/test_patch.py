"""Adversarial patch (Brown et al. 2017): pasting lands where asked; a patch trained on a few photos
fools photos it has never seen more often than chance and than a noise patch of the same size."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from deepprobe.cli import app

TARGET = "toaster"
SIZE = 0.4


def _tensor(lite0, array: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(array)).float()
    if x.dim() == 2:
        x = x[..., None].repeat(1, 1, 3)
    return lite0.prepare(x[..., :3].permute(2, 0, 1)[None] / 255)


@pytest.fixture(scope="session")
def photo_sets(lite0, examples):
    """Training: crops and flips of three scikit-image photos. Held out: seven different photos."""
    from skimage import data

    train = []
    for name in ("chelsea", "coffee", "astronaut"):
        a = getattr(data, name)()
        h, w = a.shape[:2]
        train += [_tensor(lite0, v) for v in (a, a[:, ::-1], a[: h * 3 // 4, : w * 3 // 4], a[h // 4:, w // 4:])]
    held = [lite0.load_image(examples / f"{n}.jpg") for n in ("motorcycle", "rocket")]
    held += [_tensor(lite0, getattr(data, n)()) for n in ("camera", "hubble_deep_field", "immunohistochemistry",
                                                           "retina", "coins")]
    return torch.cat(train), torch.cat(held)


@pytest.fixture(scope="session")
def trained(lite0, photo_sets):
    import deepprobe as dp

    return dp.train_patch(lite0, photo_sets[0], TARGET, size=SIZE, steps=80, batch_size=4, lr=0.05, seed=0)


def test_paste_lands_where_asked():
    from deepprobe.engine.patch import fixed_placements, paste

    images = torch.full((2, 3, 100, 200), 0.5)
    red = torch.zeros(1, 3, 8, 8)
    red[:, 0] = 1
    out = paste(images, red, fixed_placements(2, 0.25, 0.7, 0.2, 0.0))
    cover = out[:, 0] - out[:, 1]  # how much of each pixel the (soft-edged) patch covers
    ys, xs = torch.nonzero(cover[0] > 0.5, as_tuple=True)
    assert abs(float(xs.float().mean()) - 0.25 * 200) < 1.5 and abs(float(ys.float().mean()) - 0.7 * 100) < 1.5
    assert abs(float(cover[0].sum()) - 20 * 20) < 50  # side = 0.2 of the shorter side (100 px)
    assert torch.equal(out[:, :, :40], images[:, :, :40])  # nothing changes away from the patch
    turned = paste(images[:1], red, fixed_placements(1, 0.5, 0.5, 0.2, 45.0))
    cover = turned[0, 0] - turned[0, 1]
    assert abs(float(cover.sum()) - 400) < 50
    assert float(cover[50, 100 - 13]) > 0.5 and float(cover[50 - 13, 100 - 13]) < 0.05  # a diamond now


def test_paste_is_differentiable_in_the_patch():
    from deepprobe.engine.patch import fixed_placements, paste

    patch = torch.rand(1, 3, 16, 16, requires_grad=True)
    paste(torch.rand(2, 3, 64, 64), patch, fixed_placements(2, 0.5, 0.5, 0.5, 30.0)).sum().backward()
    assert patch.grad is not None and float(patch.grad.abs().sum()) > 0


@pytest.mark.slow
def test_patch_fools_unseen_photos_better_than_chance_and_noise(lite0, photo_sets, trained):
    import deepprobe as dp
    from deepprobe.techniques.patch import random_patch

    _, held = photo_sets
    assert trained.losses[-10:] and np.mean(trained.losses[-10:]) < np.mean(trained.losses[:10])
    learned = dp.apply_patch(lite0, held, trained.patch, TARGET, size=SIZE, placement="random", seed=3)
    noise = dp.apply_patch(lite0, held, random_patch(trained.patch.shape[-1]), TARGET, size=SIZE,
                           placement="random", seed=3)
    clean = lite0.predict(held).argmax(1)
    assert not bool((clean == lite0.class_index(TARGET)).any())  # none of them is a toaster to begin with
    assert learned.success_rate >= 2 / 7 > noise.success_rate + 1 / 7  # chance is 1/1000
    assert float(learned.target_prob.mean()) > 20 * float(noise.target_prob.mean())


def test_apply_with_a_given_placement(lite0, photo_sets):
    import deepprobe as dp

    held = photo_sets[1][:3]
    patch = torch.zeros(1, 3, 32, 32)
    res = dp.apply_patch(lite0, held, patch, TARGET, placement=(0.5, 0.5, 0.25, 0.0))
    assert res.placements[0] == {"x": 0.5, "y": 0.5, "scale": 0.25, "angle": 0.0}
    assert float(res.images[:, :, 100:124, 100:124].max()) == 0  # the black patch sits in the centre
    assert torch.equal(res.images[:, :, :80], held[:, :, :80].mul(255).round().div(255))
    # success is what a fresh classification of the patched images says, and the rate is its share
    seen = lite0.predict(res.images).argmax(1)
    assert torch.equal(res.success, seen == lite0.class_index(TARGET)) and torch.equal(res.predicted, seen)
    again = dp.apply_patch(lite0, held, patch, int(seen[0]), placement=(0.5, 0.5, 0.25, 0.0))
    assert torch.equal(again.success, seen == seen[0])
    assert again.success_rate == pytest.approx(float((seen == seen[0]).float().mean())) and again.success_rate > 0
    with pytest.raises(dp.DeepprobeError, match=r"scale must be in \(0, 1\], got 2"):
        dp.apply_patch(lite0, held, patch, TARGET, placement=(0.5, 0.5, 2.0, 0.0))


def _write_photos(folder, names):
    from PIL import Image
    from skimage import data

    folder.mkdir()
    for name in names:
        Image.fromarray(getattr(data, name)()).convert("RGB").save(folder / f"{name}.png")
    return folder


def test_cli_train_then_apply(tmp_path, lite0):
    train_dir = _write_photos(tmp_path / "train", ["chelsea", "coffee"])
    new_dir = _write_photos(tmp_path / "new", ["rocket", "camera"])
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(app, ["patch", "train", str(train_dir), "--target", TARGET, "--size", "0.3",
                                 "--steps", "3", "--batch-size", "2", "--json", "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["command"] == "patch train"
    row = summary["results"][0]
    patch_png = out / "patch_toaster.png"
    assert row["output"] == str(patch_png) and patch_png.exists() and (out / "patch_toaster_preview.png").exists()
    meta = json.loads(patch_png.with_suffix(".json").read_text())["result"]
    assert meta["target"] == TARGET and meta["size"] == 0.3 and len(meta["training_images"]) == 2
    assert len(meta["loss_curve"]) == 3

    def apply(*extra):
        result = runner.invoke(app, ["patch", "apply", str(patch_png), str(new_dir), "--x", "0.3", "--y", "0.6",
                                     "--angle", "15", "--json", "--out", str(out), "--device", "cpu", *extra])
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        # the reported rate against a fresh classification of the saved images, re-read from disk
        seen = [lite0.class_name(int(lite0.predict(lite0.load_image(r["output"])).argmax())) for r in summary["results"]]
        assert [r["predicted"] for r in summary["results"]] == seen
        assert [r["success"] for r in summary["results"]] == [s == summary["target"] for s in seen]
        assert summary["success_rate"] == pytest.approx(sum(s == summary["target"] for s in seen) / len(seen))
        return summary, seen

    summary, seen = apply()
    assert summary["target"] == TARGET and summary["images"] == 2
    assert summary["placement"] == [0.3, 0.6, 0.3, 15.0]  # the size comes from the patch's metadata
    for r in summary["results"]:
        assert r["placement"] == {"x": 0.3, "y": 0.6, "scale": 0.3, "angle": 15.0}
        assert r["output"].endswith(f"{r['input'].split('/')[-1].rsplit('.', 1)[0]}_patched.png")
    summary, _ = apply("--target", seen[0])  # a target the first saved image is seen as: a rate above 0
    assert summary["target"] == seen[0] and summary["success_rate"] >= 0.5


def test_cli_bad_target_exits_2(tmp_path):
    train_dir = _write_photos(tmp_path / "train", ["chelsea"])
    result = CliRunner().invoke(app, ["patch", "train", str(train_dir), "--target", "toastr", "--steps", "1",
                                      "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code == 2 and "toastr" in result.output
