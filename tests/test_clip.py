"""CLIP through `hf:DIR`: zero-shot classification over prompts, Chefer's bi-modal relevance, targeted attacks.

A session fixture trains a tiny CLIP on synthetic scenes (tests/tiny_hf.py: "a red square", "a blue circle",
"a green triangle" on grey noise) and saves it with its processor the way a user saves openai/clip-*; everything
below loads it through `hf:DIR`. The relevance maps are checked against the rules applied by hand to the
attention maps and gradients of a plain CLIPModel forward pass, and on scenes of two objects they must land on
the object the prompt names.
"""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import deepprobe as dp
from deepprobe.cli import app
from deepprobe.errors import DeepprobeError
from deepprobe.explain import to_input_size
from deepprobe.explain.transformer import chefer
from deepprobe.io import save_png
from tests.tiny_hf import CLASS_NAMES, CLIP_MEAN, CLIP_STD, PROMPTS, save_clip, scenes, train_clip

SIZE = 48
GRID = 6  # 48 px / 8 px patches


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small gains nothing from threads
    try:
        model, tok = train_clip(steps=80, size=SIZE)
    finally:
        torch.set_num_threads(threads)
    return save_clip(model, tok, tmp_path_factory.mktemp("tiny_clip"), SIZE)


@pytest.fixture(scope="session")
def clip(clip_dir):
    return dp.load_model(f"hf:{clip_dir}", device="cpu").set_prompts(PROMPTS)


@pytest.fixture(scope="session")
def pairs():
    """Scenes of two objects: images, classes (N,2), masks (N,2,H,W)."""
    x, classes, _, masks = scenes(12, seed=21, size=SIZE, objects_per_image=2)
    return x, classes, masks


def run_cli(*args: str):
    return CliRunner().invoke(app, list(args))


def mass_on(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean map value inside each mask."""
    return (maps * masks).flatten(1).sum(1) / masks.flatten(1).sum(1)


# ------------------------------------------------------------------------------------------ loading
def test_hf_clip_is_an_image_text_model_equal_to_clipmodel(clip_dir, clip, examples):
    from PIL import Image
    from transformers import CLIPModel, CLIPProcessor

    fresh = dp.load_model(f"hf:{clip_dir}", device="cpu")
    assert fresh.task == "image-text" and fresh.labels is None and fresh.input_size == (SIZE, SIZE)
    assert clip.labels == PROMPTS and clip.num_classes == 3
    # the geometry and normalization of the saved CLIPProcessor
    processor = CLIPProcessor.from_pretrained(clip_dir, local_files_only=True)
    ours = clip.load_image(examples / "cat.jpg")
    theirs = processor(images=Image.open(examples / "cat.jpg").convert("RGB"), return_tensors="pt")["pixel_values"]
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    assert ours.shape == theirs.shape and ((ours - mean) / std - theirs).abs().mean() < 0.02
    # the logits are CLIPModel's logits_per_image for the prompts
    x, _, _, _ = scenes(4, seed=3, size=SIZE)
    model = CLIPModel.from_pretrained(clip_dir, local_files_only=True).eval()
    with torch.no_grad():
        expected = model(pixel_values=(x - mean) / std,
                         **processor.tokenizer(PROMPTS, padding=True, return_tensors="pt")).logits_per_image
    assert torch.allclose(clip.net(x), expected, atol=1e-4)


def test_a_clip_folder_without_its_tokenizer_is_refused(clip_dir, tmp_path):
    import shutil

    for name in ("config.json", "model.safetensors"):
        shutil.copy(clip_dir / name, tmp_path / name)
    with pytest.raises(DeepprobeError, match="no tokenizer"):
        dp.load_model(f"hf:{tmp_path}", device="cpu")


def test_prompts_are_required_and_only_clip_takes_them(clip_dir, lite0):
    fresh = dp.load_model(f"hf:{clip_dir}", device="cpu")
    with pytest.raises(DeepprobeError, match="prompts"):
        dp.classify(fresh, torch.rand(1, 3, SIZE, SIZE))
    with pytest.raises(DeepprobeError, match="only CLIP"):
        lite0.set_prompts(["a cat"])
    with pytest.raises(DeepprobeError, match="non-empty"):
        fresh.set_prompts(["a cat", " "])


# ------------------------------------------------------------------------------------------ zero-shot
def test_zero_shot_picks_the_prompt_of_the_object(clip):
    x, classes, _, _ = scenes(30, seed=11, size=SIZE)
    predictions = dp.classify(clip, x, top=1)
    assert [p.labels[0] for p in predictions] == [PROMPTS[c] for c in classes[:, 0].tolist()]


def test_classify_cli_with_text_and_with_a_labels_file(clip_dir, tmp_path):
    x, classes, _, _ = scenes(3, seed=12, size=SIZE)
    files = [save_png(img, tmp_path / f"scene{i}.png") for i, img in enumerate(x)]
    args = ["classify", *map(str, files), "--model", f"hf:{clip_dir}", "--out", str(tmp_path / "out")]
    texts = [a for p in PROMPTS for a in ("--text", p)]
    res = run_cli(*args, *texts, "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["prompts"] == PROMPTS
    assert [r["top"][0]["class"] for r in summary["results"]] == [PROMPTS[c] for c in classes[:, 0].tolist()]
    assert len(summary["results"][0]["top"]) == 3  # never more columns than prompts
    # --labels: class names become "a photo of a {name}." prompts, reported by name, and said so
    labels = tmp_path / "labels.txt"
    labels.write_text("# colours and shapes\n" + "\n".join(CLASS_NAMES) + "\n\n")
    res = run_cli(*args, "--labels", str(labels), "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["prompts"] == [f"a photo of a {n}." for n in CLASS_NAMES]
    assert summary["prompt_template"] == "a photo of a {}."
    assert [r["top"][0]["class"] for r in summary["results"]] == [CLASS_NAMES[c] for c in classes[:, 0].tolist()]
    res = run_cli(*args, "--labels", str(labels))
    assert res.exit_code == 0 and "'a photo of a {name}.'" in res.stderr


@pytest.mark.parametrize("extra, message", [
    ((), "give the prompts to score with --text"),
    (("--labels", "missing.txt"), "--labels file not found"),
])
def test_clip_cli_errors_are_one_line(clip_dir, tmp_path, extra, message):
    image = save_png(scenes(1, seed=1, size=SIZE)[0][0], tmp_path / "scene.png")
    res = run_cli("classify", str(image), "--model", f"hf:{clip_dir}", *extra)
    assert res.exit_code == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command, extra", [("classify", ("--text", "a cat")), ("fool", ("--target-text", "a cat"))])
def test_text_options_refuse_other_models(examples, tmp_path, command, extra):
    res = run_cli(command, str(examples / "cat.jpg"), "--out", str(tmp_path), *extra)
    assert res.exit_code == 2 and "image-text" in res.stderr and len(res.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------ Chefer by hand
def hand_relevance(clip_dir, x: torch.Tensor, texts: list[str]):
    """Chefer's bi-modal rule written out on a plain CLIPModel forward pass (eager attention, attention maps
    and their gradients from autograd), one image-text pair at a time, with full matrices:
    score = the matched image-text logit; R = I; per block R <- R + mean_heads((grad * A)^+) @ R."""
    from transformers import AutoTokenizer, CLIPModel

    model = CLIPModel.from_pretrained(clip_dir, local_files_only=True, attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(clip_dir, local_files_only=True)
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    images, words = [], []
    for i, text in enumerate(texts):
        enc = tok([text], return_tensors="pt")
        out = model(pixel_values=(x[i:i + 1] - mean) / std, **enc, output_attentions=True)
        vision, language = out.vision_model_output.attentions, out.text_model_output.attentions
        grads = torch.autograd.grad(out.logits_per_image[0, 0], vision + language)
        rel = []
        for attentions, gradients in ((vision, grads[:len(vision)]), (language, grads[len(vision):])):
            r = torch.eye(attentions[0].shape[-1])
            for a, g in zip(attentions, gradients):
                a_bar = (g[0] * a[0].detach()).clamp(min=0).mean(0)
                r = r + a_bar @ r
            rel.append(r)
        eot = int(enc["input_ids"][0].argmax())  # the end-of-text token has the largest id
        images.append(rel[0][0, 1:].reshape(GRID, GRID))
        words.append(rel[1][eot, 1:eot])
    return torch.stack(images), words


def test_chefer_equals_the_rules_applied_by_hand(clip_dir, clip, pairs):
    x, classes, _ = pairs
    x, targets = x[:3], torch.tensor([classes[0, 0], classes[1, 1], classes[2, 0]])
    images, words = hand_relevance(clip_dir, x, [PROMPTS[t] for t in targets.tolist()])
    ours = chefer(clip, x, targets)  # the raw map on the patch grid, before resizing and scaling
    assert ours.shape == (3, GRID, GRID) and torch.allclose(ours, images, atol=1e-5, rtol=1e-4)
    assert images.std() > 0  # a map that says something
    text = dp.text_relevance(clip, x, targets)
    for rel, hand, t in zip(text, words, targets.tolist()):
        assert rel.prompt == PROMPTS[t] and rel.tokens == PROMPTS[t].split()
        assert torch.allclose(torch.tensor(rel.scores), hand, atol=1e-6, rtol=1e-4)
    # the dispatcher's map is the same map, resized to the input
    assert torch.allclose(dp.explain(clip, x, "chefer", target=targets),
                          to_input_size(images, (SIZE, SIZE)), atol=1e-5)


def test_chefer_lands_on_the_object_the_prompt_names(clip, pairs):
    x, classes, masks = pairs
    for j in (0, 1):  # the left object, then the right one
        maps = dp.explain(clip, x, "chefer", target=classes[:, j])
        own, other = mass_on(maps, masks[:, j]), mass_on(maps, masks[:, 1 - j])
        assert (own > other).float().mean() >= 0.9, (j, own, other)


# ------------------------------------------------------------------------------------------ CLI
def test_explain_cli_maps_each_prompt_and_scores_its_words(clip_dir, pairs, tmp_path):
    import numpy as np

    x, classes, masks = pairs
    image = save_png(x[0], tmp_path / "pair.png")
    named = [PROMPTS[c] for c in classes[0].tolist()]
    out = tmp_path / "out"
    res = run_cli("explain", str(image), "--model", f"hf:{clip_dir}", "--text", named[0], "--text", named[1],
                  "--method", "chefer", "--method", "gradcam", "--out", str(out), "--json")
    assert res.exit_code == 0, res.output
    results = json.loads(res.stdout)["results"]
    assert [r["class"] for r in results] == named  # one record per prompt
    for j, record in enumerate(results):
        assert set(record["methods"]) == {"chefer", "gradcam"}
        assert record["methods"]["gradcam"]["layer"] == "vision_model.encoder.layers.1.layer_norm1"
        words = record["text_relevance"]
        assert words["prompt"] == named[j] and [w["token"] for w in words["tokens"]] == named[j].split()
        heat = torch.from_numpy(np.load(record["methods"]["chefer"]["map"]))[None]
        assert mass_on(heat, masks[0, j][None]) > mass_on(heat, masks[0, 1 - j][None])
        assert (out / f"pair_chefer_{named[j].replace(' ', '_')}.png").is_file()


def test_fool_cli_reaches_the_target_prompt_on_the_saved_png(clip_dir, tmp_path):
    x, classes, _, _ = scenes(2, seed=5, size=SIZE)
    files = [save_png(img, tmp_path / f"scene{i}.png") for i, img in enumerate(x)]
    start = [PROMPTS[c] for c in classes[:, 0].tolist()]
    target = next(p for p in PROMPTS if p not in start)
    texts = [a for p in PROMPTS if p != target for a in ("--text", p)]
    out = tmp_path / "out"
    res = run_cli("fool", *map(str, files), "--model", f"hf:{clip_dir}", *texts, "--target-text", target,
                  "--eps", "16/255", "--out", str(out), "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["prompts"][-1] == target  # the target joins the prompts the attack ranks
    for record, original in zip(summary["results"], start):
        assert record["original_class"] == original and record["success"] and record["final_class"] == target
        assert record["checked_on"] == "saved PNG" and record["linf_255"] <= 16
    # an independent run on the files as saved
    again = run_cli("classify", *[r["output"] for r in summary["results"]], "--model", f"hf:{clip_dir}",
                    *[a for p in PROMPTS for a in ("--text", p)], "--json", "--out", str(tmp_path / "check"))
    assert [r["top"][0]["class"] for r in json.loads(again.stdout)["results"]] == [target, target]


def test_evaluate_cli_scores_maps_of_the_prompts(clip_dir, pairs, tmp_path):
    x, classes, _ = pairs
    image = save_png(x[1], tmp_path / "pair.png")
    res = run_cli("evaluate", str(image), "--model", f"hf:{clip_dir}", *[a for p in PROMPTS for a in ("--text", p)],
                  "--method", "chefer", "--metric", "deletion", "--steps", "8", "--out", str(tmp_path / "out"), "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    record = summary["results"][0]
    assert record["target_name"] == PROMPTS[record["target"]]  # the classes are the prompts
    # deleting what Chefer points at first removes the match faster than deleting random pixels
    deletion = {name: record["scores"][name]["deletion"]["value"] for name in ("chefer", "random")}
    assert deletion["chefer"] < deletion["random"], deletion
