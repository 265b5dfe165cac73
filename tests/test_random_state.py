"""The Python API leaves a caller's random state as it found it: Python's, NumPy's and torch's generators (CUDA's
too when in use) and cuDNN's flags. Only the command line seeds globally (it owns its process). Seeded calls still
repeat, whatever the caller's state; every public function is called (tiny sizes, a step or two)."""
from __future__ import annotations

import contextlib
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import deepprobe as dp

DET, SEG = "python:tests.tiny_tasks:detector", "python:tests.tiny_tasks:segmenter"


def _state() -> dict:
    cudnn = torch.backends.cudnn
    gpus = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": gpus, "cudnn": (cudnn.enabled, cudnn.benchmark, cudnn.deterministic)}


def _differences(before: dict, after: dict) -> list[str]:
    changed = [k for k in ("python", "cudnn") if before[k] != after[k]]
    changed += ["numpy"] * (not all(np.array_equal(a, b) for a, b in zip(before["numpy"], after["numpy"])))
    changed += ["torch"] * (not torch.equal(before["torch"], after["torch"]))
    changed += ["cuda"] * (len(before["cuda"]) != len(after["cuda"])
                           or not all(torch.equal(a, b) for a, b in zip(before["cuda"], after["cuda"])))
    return changed


@contextlib.contextmanager
def _caller(seed: int):
    """A caller with seeded generators and cuDNN flags set the other way from what `seed_everything` sets."""
    cudnn = torch.backends.cudnn
    flags = (cudnn.benchmark, cudnn.deterministic)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    cudnn.benchmark, cudnn.deterministic = True, False
    try:
        yield
    finally:
        cudnn.benchmark, cudnn.deterministic = flags


# public function -> (fixtures it needs, built before the check; call(get) -> what a repeat must reproduce).
def _small(get):
    return F.interpolate(get("cat"), size=(64, 64), mode="area")


def _patch(get):
    return dp.train_patch(get("lite0"), _small(get), "toaster", steps=1, batch_size=1, seed=3).patch


def _astronaut(get):
    return dp.read_image(get("examples") / "astronaut.jpg")[..., :288, 96:384]  # the face, a third of the pixels


def _robustness(get):
    result = dp.robustness(get("lite0"), _small(get), attacks=["apgd-ce", "square"], eps=0.01, steps=2, queries=3,
                           seed=5)  # no labels: the predictions, so the attacks run
    return [{eps: {k: v for k, v in entry.items() if k != "seconds"} for eps, entry in r["eps"].items()}
            for r in result.records]


def _tiny32(get):
    return F.interpolate(get("cat"), size=(32, 32), mode="area")


def _gallery(get):
    pair = torch.cat([_tiny32(get), _tiny32(get).flip(-1)])
    return dp.build_gallery(get("embedder"), pair, ["cat", "flipped"], ["a", "b"])


LITE0, TASKS = ("lite0", "cat", "examples"), ("detector", "segmenter", "shapes")
EMBED = ("embedder", "cat")
SAM, DEPTH = ("sam", "cat"), ("depth", "cat")
POINT = (12.0, 20.0)
CASES = {
    "load_model": ((), lambda get: dp.load_model("efficientnet_lite0", device="cpu").inner.classifier.weight),
    "read_image": (LITE0, lambda get: dp.read_image(get("examples") / "cat.jpg")),
    "find_images": (LITE0, lambda get: dp.find_images([str(get("examples"))])[0]),
    "classify": (LITE0, lambda get: dp.classify(get("lite0"), _small(get), top=3)[0].indices),
    "attack": (LITE0, lambda get: dp.attack(get("lite0"), _small(get), "toaster", steps=2, rounds=0,
                                                 seed=5).images),
    "fool_from_noise": (LITE0, lambda get: dp.fool_from_noise(get("lite0"), ["toaster"], steps=1, population=4,
                                                              elite=2, resolution=16, refine_steps=1, seed=5).images),
    "train_patch": (LITE0, _patch),
    "apply_patch": (LITE0, lambda get: dp.apply_patch(get("lite0"), _small(get), _patch(get), "toaster",
                                                      seed=5).images),
    "invert": (LITE0, lambda get: dp.invert(get("lite0"), _small(get), "blocks.1", steps=2, seed=5).images),
    "maximize": (LITE0, lambda get: dp.maximize(get("lite0"), "toaster", steps=2, size=64, seed=5).images),
    "dream": (LITE0, lambda get: dp.dream(get("lite0"), _small(get), "blocks.2", steps=2, octaves=1, seed=5).images),
    "style": (LITE0, lambda get: dp.style(get("lite0"), _small(get), _small(get).flip(-1), style_layers=("blocks.0",),
                                          content_layer="blocks.1", steps=2, size=64, optimizer="adam", init="noise",
                                          seed=5).images),
    "explain": (LITE0, lambda get: dp.explain(get("lite0"), _small(get), "smoothgrad", samples=2)),
    "evaluate": (LITE0, lambda get: dp.evaluate(get("lite0"), _small(get), "gradcam", seed=5, steps=2,
                                                metrics=["faithfulness-correlation", "random-logit"],
                                                correlation_runs=2, subset_size=64
                                                ).scores["random"]["faithfulness-correlation"].values),
    "robustness": (LITE0, _robustness),
    "detect": (TASKS, lambda get: dp.detect(get("detector"), get("shapes"))[0].boxes),
    "segment": (TASKS, lambda get: dp.segment(get("segmenter"), get("shapes"))[0].mask),
    "fool_detector": (TASKS, lambda get: dp.fool_detector(get("detector"), get("shapes"), vanish="square", steps=2,
                                                          seed=5).images),
    "fool_segmenter": (TASKS, lambda get: dp.fool_segmenter(get("segmenter"), get("shapes"), vanish="square",
                                                            steps=2, seed=5).images),
    "estimate_age": (LITE0, lambda get: [face.age for face in dp.estimate_age(_astronaut(get))]),
    "age": (LITE0, lambda get: dp.age(_astronaut(get), 60, steps=1, rounds=1).chips),
    "text_relevance": (("clip",), lambda get: dp.text_relevance(get("clip"), torch.rand(
        1, 3, 48, 48, generator=torch.Generator()))[0].scores),
    "embed": (EMBED, lambda get: dp.embed(get("embedder"), _tiny32(get))),
    "attention_heads": (EMBED, lambda get: dp.attention_heads(get("embedder"), _tiny32(get))),
    "build_gallery": (EMBED, lambda get: _gallery(get).embeddings),
    "knn_classify": (EMBED, lambda get: dp.knn_classify(get("embedder"), _tiny32(get), _gallery(get),
                                                         neighbors=2)[0].scores),
    "feature_attack": (EMBED, lambda get: dp.feature_attack(get("embedder"), _tiny32(get), away=True, steps=2,
                                                             seed=5).images),
    "segment_prompts": (SAM, lambda get: dp.segment_prompts(get("sam"), _tiny32(get), [dp.Prompt.point(*POINT)])
                        [0][0].logits),
    "fool_prompt": (SAM, lambda get: dp.fool_prompt(get("sam"), _tiny32(get), dp.Prompt.point(*POINT), steps=2,
                                                    rounds=1, seed=5).images),
    "estimate_depth": (DEPTH, lambda get: dp.estimate_depth(get("depth"), _tiny32(get))[0].depth),
    "fool_depth": (DEPTH, lambda get: dp.fool_depth(get("depth"), _tiny32(get), (4, 4, 20, 20), steps=2, rounds=1,
                                                    seed=5).images),
    "depth_robustness": (DEPTH, lambda get: dp.depth_robustness(get("depth"), _tiny32(get), eps=2 / 255, steps=2,
                                                                seed=5).abs_rel),
    "prompts_from_labels": ((), lambda get: dp.prompts_from_labels(["cat"])),
}
# SmoothGrad draws captum's noise from the caller's generator, by design (as a torch function would): it may differ
# between callers in different states; it must still not advance the caller's state.
FOLLOWS_THE_CALLERS_STATE = {"explain"}


def test_every_public_function_is_checked():
    public = {name for name in dp._EXPORTS if callable(getattr(dp, name)) and not isinstance(getattr(dp, name), type)}
    assert set(CASES) == public


@pytest.fixture(scope="module")
def fixtures(request, tiny_tasks):
    """Fixtures by name, built on first use (the CLIP model only for text_relevance)."""
    made = {}

    def get(name: str):
        if name not in made:
            if name == "detector":
                made[name] = dp.load_model(DET, weights=str(tiny_tasks[0]), device="cpu")
            elif name == "segmenter":
                made[name] = dp.load_model(SEG, weights=str(tiny_tasks[1]), device="cpu")
            elif name == "shapes":
                from tests.tiny_tasks import two_shapes

                made[name] = two_shapes()[0]
            elif name == "embedder":
                made[name] = dp.load_model("python:tests.tiny_embedders:vit", device="cpu", input_size=32)
            elif name == "sam":
                from tests.tiny_foundation import save_sam

                made[name] = dp.load_model(f"hf:{save_sam(request.getfixturevalue('tmp_path_factory').mktemp('sam'))}",
                                           device="cpu")
            elif name == "depth":
                made[name] = dp.load_model("python:tests.tiny_foundation:brightness_depth", device="cpu")
            elif name == "clip":
                made[name] = _tiny_clip(request.getfixturevalue("tmp_path_factory").mktemp("clip"))
            else:
                made[name] = request.getfixturevalue(name)
        return made[name]

    return get


def _tiny_clip(folder):
    from tests.tiny_hf import PROMPTS, build_clip, save_clip

    model, tokenizer = build_clip()  # untrained: the relevance of any CLIP is deterministic
    return dp.load_model(f"hf:{save_clip(model, tokenizer, folder)}", device="cpu").set_prompts(PROMPTS)


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return a == b


@pytest.mark.parametrize("name", sorted(CASES))
def test_public_function_leaves_the_callers_random_state(name, fixtures):
    needs, call = CASES[name]
    for fixture in needs:
        fixtures(fixture)  # built before the check: building a test model may draw from the global generator
    results = []
    for seed in (1, 2):  # two callers in different states
        with _caller(seed):
            before = _state()
            results.append(call(fixtures))
            changed = _differences(before, _state())
        assert not changed, f"dp.{name} changed the caller's {', '.join(changed)} state"
    if name not in FOLLOWS_THE_CALLERS_STATE:
        assert _equal(*results), f"dp.{name} gave another result in another caller state"


def test_loading_a_model_keeps_the_state_though_building_it_draws_initial_weights(tiny_tasks):
    """The guard is what keeps it: the same network built by hand draws from the global generator."""
    from tests.tiny_tasks import detector

    with _caller(1):
        before = _state()
        detector()
        assert "torch" in _differences(before, _state())
        before = _state()
        dp.load_model(DET, weights=str(tiny_tasks[0]), device="cpu")
        assert not _differences(before, _state())


def test_smoothgrad_noise_comes_from_the_callers_seed(fixtures):
    x = _small(fixtures)
    with _caller(7):
        first = dp.explain(fixtures("lite0"), x, "smoothgrad", samples=2)
        again = dp.explain(fixtures("lite0"), x, "smoothgrad", samples=2)
    with _caller(8):
        other = dp.explain(fixtures("lite0"), x, "smoothgrad", samples=2)
    assert torch.equal(first, again) and not torch.equal(first, other)


@pytest.mark.cuda
def test_on_the_gpu_the_callers_cuda_generator_is_kept_too(examples):
    """A model on the GPU, an attack and captum's noise drawn on it: the CUDA generator stays the caller's."""
    probe = dp.load_model("efficientnet_lite0", device="cuda")
    x = probe.load_image(examples / "cat.jpg")
    for call in (lambda: dp.load_model("efficientnet_lite0", device="cuda"),
                 lambda: dp.attack(probe, x, "toaster", steps=2, rounds=0, seed=5),
                 lambda: dp.explain(probe, x, "smoothgrad", samples=2)):
        with _caller(1):
            torch.cuda.manual_seed_all(1)
            before = _state()
            call()
            assert before["cuda"] and not _differences(before, _state())
