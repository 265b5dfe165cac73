"""Embedders (task `embedding`): head-less backbones as DINO, DINOv2 and CLIP/SigLIP image towers ship them.

Loading and attention are checked on tiny random models built from configs (no ViT weights exist offline) against
the libraries' own outputs and a hand computation from q and k. Behaviour is checked on a real backbone: the bundled
EfficientNet-Lite0 without its classifier (ImageNet features), on the example photos: similarity maps must land on
the object two images share, the feature attack must move retrieval in a gallery of other views of the photos, and
DINO's k-NN must name each photo's folder.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import deepprobe as dp
from deepprobe.cli import app
from deepprobe.errors import DeepprobeError
from deepprobe.io import quantize
from deepprobe.models.embedding import embed
from tiny_embedders import HEADS, PHOTOS, make_gallery, save_headless_lite0, save_hf

HF_ARCHS = ("Dinov2Model", "ViTModel", "CLIPVisionModel", "CLIPVisionModelWithProjection", "SiglipVisionModel",
            "SiglipModel")


def run_cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="session")
def lite0_backbone(tmp_path_factory) -> Path:
    return save_headless_lite0(tmp_path_factory.mktemp("backbone") / "lite0_backbone.safetensors")


@pytest.fixture(scope="session")
def embedder(lite0_backbone):
    return dp.load_model("timm:tf_efficientnet_lite0", weights=lite0_backbone, device="cpu")


@pytest.fixture(scope="session")
def gallery_dir(tmp_path_factory) -> Path:
    return make_gallery(tmp_path_factory.mktemp("gallery"))


@pytest.fixture(scope="session")
def photos(embedder, examples) -> dict[str, torch.Tensor]:
    return {name: embedder.load_image(examples / f"{name}.jpg") for name in PHOTOS}


def backbone_args(path: Path) -> list[str]:
    return ["--model", "timm:tf_efficientnet_lite0", "--weights", str(path)]


# ------------------------------------------------------------------------------------------ loading
def test_a_dino_style_backbone_checkpoint_loads_as_an_embedder(tmp_path):
    """The issue's refusal ('missing key head.weight'): weights without a classifier make the net an embedder whose
    output is timm's pooled CLS embedding; the same weights with a head still give a classifier."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    backbone = timm.create_model("vit_tiny_patch16_224", num_classes=0).eval()
    save_file(backbone.state_dict(), str(tmp_path / "dino.safetensors"))
    x = torch.rand(1, 3, 224, 224)
    for spec in ("timm:vit_tiny_patch16_224", "timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k"):
        bundle = dp.load_model(spec, weights=tmp_path / "dino.safetensors", device="cpu")
        assert bundle.task == "embedding" and bundle.labels is None and bundle.num_classes is None
        mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (bundle.preprocess.mean, bundle.preprocess.std))
        with torch.no_grad():
            assert torch.allclose(bundle.net(x), backbone((x - mean) / std), atol=1e-5)
    headed = timm.create_model("vit_tiny_patch16_224", num_classes=7)
    save_file(headed.state_dict(), str(tmp_path / "headed.safetensors"))
    bundle = dp.load_model("timm:vit_tiny_patch16_224", weights=tmp_path / "headed.safetensors", device="cpu")
    assert bundle.task == "classification" and bundle.num_classes == 7


@pytest.mark.parametrize("arch", HF_ARCHS)
def test_hf_vision_towers_load_as_embedders(arch, tmp_path):
    """hf:DIR gives what each model's users embed with: the CLS token (ViT, DINOv2), the pooled output (CLIP's and
    SigLIP's towers, a whole SigLIP's image features) or the projected image embeds; attention is captured per head
    with rows summing to 1."""
    import transformers

    from deepprobe.explain.attention_capture import capture_attention

    folder = save_hf(arch, tmp_path / arch)
    bundle = dp.load_model(f"hf:{folder}", device="cpu")
    assert bundle.task == "embedding"
    family = {"CLIP": (0.48145466, 0.4578275, 0.40821073), "Siglip": (0.5, 0.5, 0.5)}
    expected_mean = next((v for k, v in family.items() if arch.startswith(k)), (0.485, 0.456, 0.406))
    assert bundle.preprocess.mean == pytest.approx(expected_mean)
    model = getattr(transformers, arch).from_pretrained(folder).eval()
    x = torch.rand(2, 3, *bundle.input_size)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (bundle.preprocess.mean, bundle.preprocess.std))
    with torch.no_grad():
        out = (model.vision_model if arch == "SiglipModel" else model)(pixel_values=(x - mean) / std)
        if arch in ("Dinov2Model", "ViTModel"):
            expected = out.last_hidden_state[:, 0]
        else:
            expected = out.image_embeds if arch.endswith("Projection") else out.pooler_output
        assert torch.allclose(bundle.net(x), expected, atol=1e-5)
    cap = capture_attention(bundle, x)
    assert len(cap.attentions) == 2 and cap.attentions[-1].shape[1] == HEADS
    assert torch.allclose(cap.attentions[-1].sum(-1), torch.ones(1), atol=1e-5)
    assert cap.prefix == (0 if arch.startswith("Siglip") else 1)


# ------------------------------------------------------------------------------------------ DINO's attention figure
def test_cls_attention_per_head_equals_the_hand_computation():
    """attention_heads (DINO's figure) = softmax(q k^T / sqrt(d)) of the last block's (or --layer's) CLS query."""
    from deepprobe.explain.transformer import attention_heads

    bundle = dp.load_model("python:tiny_embedders:vit", device="cpu", input_size=32)
    assert bundle.task == "embedding"
    vit = bundle.inner
    x = torch.rand(3, 3, 32, 32)
    inputs = {}
    hooks = [block.norm1.register_forward_hook(lambda _m, _i, out, k=k: inputs.__setitem__(k, out))
             for k, block in enumerate(vit.blocks)]
    with torch.no_grad():
        bundle.net(x)
    for hook in hooks:
        hook.remove()
    for layer in (-1, 0):
        attn = vit.blocks[layer].attn
        qkv = attn.qkv(inputs[layer % 2]).reshape(3, 17, 3, HEADS, 8).permute(2, 0, 3, 1, 4)
        q, k = qkv[0], qkv[1]
        cls_row = torch.softmax(q[:, :, :1] @ k.transpose(-2, -1) * 8 ** -0.5, dim=-1)[:, :, 0]  # (N, heads, 17)
        assert torch.allclose(cls_row.sum(-1), torch.ones(1), atol=1e-6)  # the CLS row sums to 1 over all tokens
        got = attention_heads(bundle, x, layer=layer, resize=False)
        assert got.shape == (3, HEADS, 4, 4)
        assert torch.allclose(got, cls_row[:, :, 1:].reshape(3, HEADS, 4, 4), atol=1e-5)


def test_explain_attention_on_an_hf_embedder_draws_every_head(tmp_path):
    folder = save_hf("Dinov2Model", tmp_path / "dinov2")
    out = tmp_path / "out"
    res = run_cli("explain", "examples/cat.jpg", "--model", f"hf:{folder}", "--method", "attention",
                  "--method", "rollout", "--out", out, "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    heads = next(r for r in summary["results"] if "attention_heads" in r)
    assert heads["heads"] == HEADS and Path(heads["attention_heads"]).is_file()
    maps = next(r for r in summary["results"] if "methods" in r)["methods"]
    import numpy as np

    assert set(maps) == {"attention", "rollout"}
    assert np.load(maps["attention"]["map"]).shape == (28, 28)
    assert (out / "cat_panel.png").is_file()


# ------------------------------------------------------------------------------------------ similarity maps
def _halves(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """A grey 224 canvas with `left` and `right` (photos) shrunk side by side."""
    def shrink(im):
        return F.interpolate(im, size=(112, 112), mode="bilinear", antialias=True)
    canvas = torch.full((1, 3, 224, 224), 0.5)
    canvas[..., 56:168, :112], canvas[..., 56:168, 112:] = shrink(left), shrink(right)
    return canvas


def test_similarity_maps_land_on_the_shared_object(embedder, photos):
    """A canvas holding the cat and the coffee: against the cat photo the map sits on the cat's half, against the
    coffee on the coffee's half (the same image, only the reference changes)."""
    canvas = _halves(photos["cat"], photos["coffee"])
    for reference, side in (("cat", 0), ("coffee", 1)):
        maps = dp.explain(embedder, canvas, "similarity", reference=photos[reference])[0]
        halves = [float(maps[:, :112].mean()), float(maps[:, 112:].mean())]
        assert halves[side] > 2 * halves[1 - side], (reference, halves)
    # on a CNN, similarity is Grad-CAM of the cosine
    assert torch.allclose(dp.explain(embedder, canvas, "similarity", reference=photos["cat"]),
                          dp.explain(embedder, canvas, "gradcam", reference=photos["cat"]))


def test_self_similarity_peaks_where_the_image_differs_from_a_blurred_copy(embedder, photos):
    """An image against itself (the cosine is at its maximum, so its plain gradient vanishes): the map peaks in the
    quadrant where the image differs from a blurred copy of itself (the photo on a flat canvas)."""
    from torchvision.transforms.functional import gaussian_blur

    photo = F.interpolate(photos["motorcycle"], size=(112, 112), mode="bilinear", antialias=True)
    for quadrant in (1, 2):
        canvas = torch.full((1, 3, 224, 224), 0.5)
        top, left = (quadrant // 2) * 112, (quadrant % 2) * 112
        canvas[..., top:top + 112, left:left + 112] = photo
        detail = (canvas - gaussian_blur(canvas, 9, 3.0)).abs().mean(1)[0]
        maps = dp.explain(embedder, canvas, "similarity", reference=canvas)[0]
        assert float(maps.max()) > 0.99  # not a vanished map

        def per_quadrant(m):
            return torch.stack([m[r:r + 112, c:c + 112].mean() for r in (0, 112) for c in (0, 112)])
        assert int(per_quadrant(detail).argmax()) == quadrant
        assert int(per_quadrant(maps).argmax()) == quadrant


def test_similarity_on_a_vit_is_chefer_of_the_cosine():
    bundle = dp.load_model("python:tiny_embedders:vit", device="cpu", input_size=32)
    x, other = torch.rand(2, 3, 32, 32), torch.rand(1, 3, 32, 32)
    maps = dp.explain(bundle, x, "similarity", reference=other)
    assert maps.shape == (2, 32, 32)
    assert torch.allclose(maps, dp.explain(bundle, x, "chefer", reference=other))
    assert not torch.allclose(maps, dp.explain(bundle, x, "chefer", reference=x[:1].flip(-1)))
    with pytest.raises(DeepprobeError, match="reference"):
        dp.explain(bundle, x, "chefer")
    with pytest.raises(DeepprobeError, match="no classes"):
        dp.explain(bundle, x, "attention", target=0)


def test_explain_similarity_cli_writes_the_pair_with_the_measured_cosine(embedder, lite0_backbone, photos,
                                                                        examples, tmp_path):
    res = run_cli("explain", examples / "coffee.jpg", *backbone_args(lite0_backbone), "--reference",
                  examples / "cat.jpg", "--out", tmp_path, "--json")
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout)["results"][0]
    with torch.no_grad():
        cosine = float(embed(embedder, photos["coffee"]) @ embed(embedder, photos["cat"]).T)
    assert record["cosine"] == pytest.approx(cosine, abs=1e-4)
    entry = record["methods"]["similarity"]
    assert entry["resolved"] == "gradcam" and Path(entry["overlay"]).name == "coffee_similarity_vs_cat.png"
    # mistakes a user can make: one line, exit 2
    for args in (["--method", "gradcam"], ["--reference", examples / "cat.jpg", "--target", "0"],
                 ["--reference", tmp_path / "missing.jpg"]):
        res = run_cli("explain", examples / "coffee.jpg", *backbone_args(lite0_backbone), *args, "--out", tmp_path)
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    res = run_cli("explain", examples / "coffee.jpg", "--reference", examples / "cat.jpg", "--out", tmp_path)
    assert res.exit_code == 2 and "applies to embedders" in res.output


# ------------------------------------------------------------------------------------------ the feature attack
def test_fool_reference_moves_retrieval_to_the_reference(embedder, lite0_backbone, gallery_dir, photos, examples,
                                                         tmp_path):
    """cat --reference coffee: on the re-read PNG the cosine to the coffee rises, the budget holds, and the nearest
    of the gallery's other views of the photos goes from a cat view to a coffee view (k-NN class too)."""
    res = run_cli("fool", examples / "cat.jpg", *backbone_args(lite0_backbone), "--reference",
                  examples / "coffee.jpg", "--gallery", gallery_dir, "--steps", "10", "--out", tmp_path, "--json")
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout)["results"][0]
    saved = embedder.load_image(record["output"])
    assert (saved - quantize(photos["cat"])).abs().max() <= 8 / 255 + 1e-6  # the 8-bit original is attacked
    with torch.no_grad():
        before = float(embed(embedder, photos["cat"]) @ embed(embedder, photos["coffee"]).T)
        after = float(embed(embedder, saved) @ embed(embedder, photos["coffee"]).T)
    assert after > before + 0.3 and record["cosine_after"] == pytest.approx(after, abs=1e-4)
    assert Path(record["nearest_before"]).parent.name == "cat"
    assert Path(record["nearest_after"]).parent.name == "coffee"
    assert record["knn_class_before"] == "cat" and record["knn_class_after"] == "coffee"
    assert record["success"] is True and Path(record["panel"]).is_file()


def test_feature_attack_away_and_its_errors(embedder, photos):
    from deepprobe.techniques.fool_embedding import feature_attack

    x = photos["rocket"]
    result = feature_attack(embedder, x, away=True, steps=5, seed=0)
    with torch.no_grad():
        moved = float(embed(embedder, result.images) @ embed(embedder, x).T)
    assert moved < 0.6 and result.cosine_to_original[0] == pytest.approx(moved, abs=1e-4)
    assert (result.images - x).abs().max() <= 8 / 255 + 1e-6
    assert torch.equal(result.images, (result.images * 255).round() / 255)  # what a PNG holds
    with pytest.raises(DeepprobeError):
        feature_attack(embedder, x, photos["cat"], away=True)
    with pytest.raises(DeepprobeError, match="embedder"):
        feature_attack(dp.load_model("efficientnet_lite0", device="cpu"), x, photos["cat"])


# ------------------------------------------------------------------------------------------ k-NN classification
def test_knn_votes_are_dino_s_temperature_weighted_sum():
    """Two close neighbours of class 0 outweigh three far ones of class 1 (a plain majority would pick 1)."""
    from deepprobe.techniques.knn import knn_votes

    sims = torch.tensor([[0.9, 0.85, 0.3, 0.2, 0.1]])
    labels = torch.tensor([[0, 0, 1, 1, 1]])
    votes = knn_votes(sims, labels, 2, temperature=0.07)
    expected = torch.tensor([[math.exp(0.9 / 0.07) + math.exp(0.85 / 0.07),
                              math.exp(0.3 / 0.07) + math.exp(0.2 / 0.07) + math.exp(0.1 / 0.07)]])
    assert torch.allclose(votes, expected) and int(votes.argmax()) == 0


def test_classify_knn_names_each_photo_s_folder(lite0_backbone, gallery_dir, examples, tmp_path):
    res = run_cli("classify", *[examples / f"{p}.jpg" for p in PHOTOS], *backbone_args(lite0_backbone),
                  "--gallery", gallery_dir, "--out", tmp_path, "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["neighbors"] == 20 and summary["gallery_size"] == 2 * len(PHOTOS)
    for record in summary["results"]:
        name = Path(record["input"]).stem
        assert record["top"][0]["class"] == name and record["top"][0]["vote"] > 0.9
        assert Path(record["nearest"][0]["name"]).parent.name == name
        assert Path(record["output"]).is_file()
    res = run_cli("classify", examples / "cat.jpg", *backbone_args(lite0_backbone), "--out", tmp_path)
    assert res.exit_code == 2 and "--gallery" in res.output
    res = run_cli("classify", examples / "cat.jpg", "--gallery", gallery_dir, "--out", tmp_path)
    assert res.exit_code == 2 and "applies to embedders" in res.output


# ------------------------------------------------------------------------------------------ techniques without classes
def test_invert_maximize_dream_and_the_report_on_an_embedder(lite0_backbone, examples, tmp_path):
    model = backbone_args(lite0_backbone)
    res = run_cli("invert", examples / "cat.jpg", *model, "--layer", "blocks.2", "--size", "64", "--steps", "15",
                  "--out", tmp_path, "--json")
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout)["results"][0]
    assert record["relative_feature_error"]["blocks.2"] < 0.8 * record["start_feature_error"]["blocks.2"]
    res = run_cli("maximize", *model, "--layer", "blocks.5", "--channel", "3", "--size", "64", "--steps", "10",
                  "--photos", str(examples / "cat.jpg"), "--out", tmp_path, "--json")
    assert res.exit_code == 0, res.output
    unit = json.loads(res.stdout)["results"][0]
    assert unit["activation"] > unit["natural_best"]
    res = run_cli("dream", examples / "cat.jpg", *model, "--octaves", "1", "--steps", "2", "--out", tmp_path)
    assert res.exit_code == 0, res.output
    from deepprobe.report import collect_runs

    assert {"invert", "maximize", "dream"} <= {run.command for run in collect_runs(tmp_path)}
    res = run_cli("models", "--json")
    rows = json.loads(res.stdout)["spec_forms"]
    assert sum(row["task"] == "embedding" for row in rows) >= 2


def test_maximize_reads_a_vit_channel_over_its_patch_tokens():
    """A ViT block gives (N,T,C) tokens: channel c is feature c averaged over the patch tokens (not token c, and
    not the class token), and optimizing it drives it up."""
    from deepprobe.techniques.maximize import resolve_units, unit_activations

    bundle = dp.load_model("python:tiny_embedders:vit", device="cpu", input_size=32)
    units = resolve_units(bundle, layer="blocks.1", channel="1,3", size=48)
    x = torch.rand(2, 3, 48, 48)
    seen = {}
    hook = bundle.inner.blocks[1].register_forward_hook(lambda _m, _i, out: seen.__setitem__("out", out))
    with torch.no_grad():
        bundle.net(x)
    hook.remove()
    expected = seen["out"][:, 1:, [1, 3]].mean(1).diagonal()  # image i, channel of unit i
    assert torch.allclose(unit_activations(bundle, units, x), expected, atol=1e-6)
    result = dp.maximize(bundle, units=units, steps=30, size=48, seed=0)
    assert result.losses[-1] < result.losses[0]
    with pytest.raises(DeepprobeError, match="out of range"):
        resolve_units(bundle, layer="blocks.1", channel="32", size=48)


@pytest.mark.cuda
def test_embedder_commands_on_cuda_match_the_cpu(lite0_backbone, gallery_dir, examples, tmp_path):
    """benchmarks/gpu_check.sh runs this (`-m cuda`); it skips without a GPU."""
    model = backbone_args(lite0_backbone)
    runs = {}
    for device in ("cuda", "cpu"):
        out = tmp_path / device
        common = [*model, "--device", device, "--out", out, "--json"]
        knn = run_cli("classify", examples / "cat.jpg", "--gallery", gallery_dir, *common)
        sim = run_cli("explain", examples / "coffee.jpg", "--reference", examples / "cat.jpg", *common)
        fool = run_cli("fool", examples / "cat.jpg", "--reference", examples / "coffee.jpg", "--steps", "10", *common)
        assert knn.exit_code == sim.exit_code == fool.exit_code == 0, (knn.output, sim.output, fool.output)
        runs[device] = [json.loads(r.stdout)["results"][0] for r in (knn, sim, fool)]
    (gk, gs, gf), (ck, cs, cf) = runs["cuda"], runs["cpu"]
    assert gk["top"][0]["class"] == ck["top"][0]["class"] == "cat"
    assert gs["cosine"] == pytest.approx(cs["cosine"], abs=1e-3)
    import numpy as np

    a, b = (np.load(r["methods"]["similarity"]["map"]) for r in (gs, cs))
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99
    assert gf["cosine_after"] > gf["cosine_before"] + 0.3 and gf["success"]
