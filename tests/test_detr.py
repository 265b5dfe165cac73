"""DETR through `hf:DIR`: boxes as transformers post-processes them, offline loading of published configs, and
Chefer's encoder-decoder relevance per detected object against the rules applied by hand.

The model is a tiny DetrForObjectDetection (tests/tiny_hf.py) with its heads redrawn so that each query has its
own class scores and box, saved with its image processor the way a user saves facebook/detr-*.
"""
from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

import deepprobe as dp
from deepprobe.cli import app
from deepprobe.explain import to_input_size
from deepprobe.explain.detr import encoder_decoder_relevance
from deepprobe.io import save_png
from tests.tiny_hf import CLASS_NAMES, DETR_MEAN, DETR_STD, build_detr, save_detr, scenes

SIZE = 64  # the processor's shortest edge; the backbone's stride is 8


@pytest.fixture(scope="session")
def detr_dir(tmp_path_factory):
    return save_detr(build_detr(queries=5, spread=0.5), tmp_path_factory.mktemp("tiny_detr"), SIZE)


@pytest.fixture(scope="session")
def detr(detr_dir):
    return dp.load_model(f"hf:{detr_dir}", device="cpu")


@pytest.fixture(scope="session")
def scene():
    return scenes(1, seed=4, size=SIZE, objects_per_image=2)[0]


def normalized(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(DETR_MEAN).view(1, 3, 1, 1)) / torch.tensor(DETR_STD).view(1, 3, 1, 1)


def run_cli(*args: str):
    return CliRunner().invoke(app, list(args))


# ------------------------------------------------------------------------------------------ boxes
def test_detr_boxes_are_those_of_transformers_post_processing(detr_dir, detr, scene, examples):
    from PIL import Image
    from transformers import DetrForObjectDetection, DetrImageProcessor

    assert detr.task == "detection" and detr.labels == CLASS_NAMES and detr.num_classes == 3
    model = DetrForObjectDetection.from_pretrained(detr_dir, local_files_only=True).eval()
    processor = DetrImageProcessor.from_pretrained(detr_dir, local_files_only=True)
    with torch.no_grad():
        expected = processor.post_process_object_detection(model(pixel_values=normalized(scene)), threshold=0.2,
                                                           target_sizes=[(SIZE, SIZE)])[0]
    found = dp.classify(detr, scene, min_score=0.2)[0]
    assert 0 < len(found) < 5  # some queries pass the threshold, not all
    order = expected["scores"].argsort(descending=True)
    assert torch.allclose(found.scores, expected["scores"][order], atol=1e-5)
    assert torch.equal(found.labels, expected["labels"][order])
    assert torch.allclose(found.boxes, expected["boxes"][order], atol=1e-3)
    assert found.names == [CLASS_NAMES[c] for c in found.labels.tolist()]
    # a photo: read, shrunk and resized inside as DETR's processor does (short side 64, long side at most 96)
    photo = detr.load_image(examples / "cat.jpg")
    assert min(photo.shape[-2:]) == SIZE
    inputs = processor(images=Image.open(examples / "cat.jpg").convert("RGB"), return_tensors="pt")
    with torch.no_grad():
        theirs = processor.post_process_object_detection(model(**inputs), threshold=0.0,
                                                         target_sizes=[tuple(photo.shape[-2:])])[0]
    ours = dp.classify(detr, photo, min_score=0.0)[0]
    order = theirs["scores"].argsort(descending=True)
    assert torch.equal(ours.labels, theirs["labels"][order])
    assert (ours.scores - theirs["scores"][order]).abs().max() < 0.02
    assert (ours.boxes - theirs["boxes"][order]).abs().max() < 2.0  # pixels; resampling differs a little


def test_a_published_timm_backbone_config_loads_without_the_network(tmp_path, monkeypatch):
    """facebook/detr-resnet-50's config names a timm backbone with pretrained weights and backbone_kwargs;
    transformers 5 would ask the Hub about it. Loading must touch no network and keep the folder's weights."""
    import socket

    from transformers import DetrConfig, DetrForObjectDetection

    torch.manual_seed(0)
    config = DetrConfig(backbone="test_resnet", d_model=16, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=16, decoder_ffn_dim=16,
                        num_queries=3, num_labels=2)
    model = DetrForObjectDetection(config).eval()
    save_detr(model, tmp_path, SIZE)
    saved = json.loads((tmp_path / "config.json").read_text())
    saved.pop("backbone_config")
    saved.update(backbone="test_resnet", use_timm_backbone=True, use_pretrained_backbone=True,
                 backbone_kwargs={"in_chans": 3, "out_indices": [1, 2, 3, 4]})  # as published (transformers 4)
    (tmp_path / "config.json").write_text(json.dumps(saved))

    def no_network(*_args, **_kwargs):
        raise AssertionError("tried to reach the network")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    probe = dp.load_model(f"hf:{tmp_path}", device="cpu")
    loaded = probe.inner.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())  # every weight from the folder
    x = torch.rand(1, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = model(pixel_values=normalized(x))
    found = probe.net(x)[0]
    best = expected.logits.softmax(-1)[0, :, :-1].max(-1).values
    assert torch.allclose(found["scores"], best.sort(descending=True).values, atol=1e-5)


# ------------------------------------------------------------------------------------------ Chefer by hand
def reference_rules(model, x: torch.Tensor, query: int, label: int) -> tuple[torch.Tensor, int]:
    """Chefer's DETR rules as their ExplanationGenerator applies them (use_lrp=False), with full matrices:
    avg_heads, rules 6+7 for self-attention, rule 10 with handle_residual for cross-attention.

    One change: handle_residual divides 0 by 0 on a query row that holds no relevance yet (frequent in the
    first decoder layer, whose self-attention values are all the same bias: a query whose output gradient
    points against it gets an all-zero row), and their code then zeroes the layer's whole cross-attention
    term; here such a row stays a row of I. Also returns how many such rows were met."""
    out = model(pixel_values=normalized(x), output_attentions=True)
    maps = [*out.encoder_attentions, *out.decoder_attentions, *out.cross_attentions]
    live = [a for a in maps if a.requires_grad]
    grads = dict(zip(map(id, live), torch.autograd.grad(out.logits[0, query, label], live, allow_unused=True)))

    def avg_heads(a):
        g = grads.get(id(a))
        g = torch.zeros_like(a) if g is None else g
        return (g[0] * a[0].detach()).clamp(min=0).mean(0)

    empty_rows = 0

    def handle_residual(r):
        nonlocal empty_rows
        r = r - torch.eye(r.shape[-1])
        r = r / r.sum(-1, keepdim=True)
        empty_rows += int(torch.isnan(r).all(-1).sum())
        return r.nan_to_num(0.0) + torch.eye(r.shape[-1])

    tokens, queries = out.encoder_attentions[0].shape[-1], out.decoder_attentions[0].shape[-1]
    r_ii, r_qq, r_qi = torch.eye(tokens), torch.eye(queries), torch.zeros(queries, tokens)
    for a in out.encoder_attentions:
        r_ii = r_ii + avg_heads(a) @ r_ii
    for self_attn, cross_attn in zip(out.decoder_attentions, out.cross_attentions):
        cam = avg_heads(self_attn)
        r_qq, r_qi = r_qq + cam @ r_qq, r_qi + cam @ r_qi
        r_qi = r_qi + handle_residual(r_qq).t() @ avg_heads(cross_attn) @ handle_residual(r_ii)
    side = int(math.isqrt(tokens))
    return r_qi[query].reshape(side, side), empty_rows


def test_chefer_on_detr_equals_the_rules_applied_by_hand(detr_dir, detr, scene):
    from transformers import DetrForObjectDetection

    model = DetrForObjectDetection.from_pretrained(detr_dir, local_files_only=True,
                                                   attn_implementation="eager").eval()
    (result,) = dp.explain(detr, scene, "chefer", min_score=0.0)
    found = result.detections
    assert len(found) == 5 and result.maps.shape == (5, SIZE, SIZE)  # every query, best first
    with torch.no_grad():
        logits = model(pixel_values=normalized(scene)).logits[0]
    probs = logits.softmax(-1)[:, :-1]
    empty = 0
    for k in range(len(found)):
        # the query behind box k: the one with this score and class
        query = int((probs.max(-1).values - found.scores[k]).abs().argmin())
        assert int(probs[query].argmax()) == int(found.labels[k])
        hand, rows = reference_rules(model, scene, query, int(found.labels[k]))
        empty += rows
        assert hand.shape == (8, 8) and hand.std() > 0
        assert torch.allclose(result.maps[k], to_input_size(hand[None], (SIZE, SIZE))[0], atol=1e-5)
    assert empty > 0  # the case where their code loses a layer's cross-attention term did come up


def test_a_query_row_without_relevance_keeps_the_identity():
    """Their normalization divides 0 by 0 on such a row and loses the whole cross-attention term; ours keeps
    the row of I, so the term still flows through the other queries."""
    encoder = [torch.tensor([[0.5, 0.5], [0.0, 1.0]])]
    decoder_self = [torch.zeros(2, 2)]  # no query leans on another: every row of R_qq - I is zero
    cross = [torch.tensor([[0.2, 0.6], [0.0, 0.0]])]
    r_qi = encoder_decoder_relevance(encoder, decoder_self, cross)
    r_ii = torch.eye(2) + encoder[0]
    image = (r_ii - torch.eye(2)) / (r_ii - torch.eye(2)).sum(-1, keepdim=True) + torch.eye(2)
    assert torch.allclose(r_qi, cross[0] @ image)
    assert torch.isfinite(r_qi).all() and r_qi[0].sum() > 0


# ------------------------------------------------------------------------------------------ CLI
def test_classify_and_explain_cli_on_detr(detr_dir, detr, scene, tmp_path):
    image = save_png(scene[0], tmp_path / "scene.png")
    out = tmp_path / "out"
    res = run_cli("classify", str(image), "--model", f"hf:{detr_dir}", "--min-score", "0.2", "--out", str(out),
                  "--json")
    assert res.exit_code == 0, res.output
    (record,) = json.loads(res.stdout)["results"]
    assert record["detections"] == dp.classify(detr, detr.load_image(image), min_score=0.2)[0].records()
    assert (out / "scene_detections.png").is_file()
    res = run_cli("explain", str(image), "--model", f"hf:{detr_dir}", "--min-score", "0.2", "--out", str(out),
                  "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["methods"] == ["chefer"]  # DETR's default: its own attention
    explained = [r for r in summary["results"] if "box_index" in r]
    assert [r["box"] for r in explained] == [d["box"] for d in record["detections"]]
    for r in explained:
        assert set(r["methods"]) == {"chefer"} and r["methods"]["chefer"]["overlay"].endswith(".png")


@pytest.mark.parametrize("args, message", [
    (("explain", "--method", "rollout"), "rollout does not apply"),
    (("evaluate",), "evaluate does not apply"),
])
def test_methods_that_do_not_apply_to_detr_say_so(detr_dir, scene, tmp_path, args, message):
    image = save_png(scene[0], tmp_path / "scene.png")
    res = run_cli(args[0], str(image), "--model", f"hf:{detr_dir}", *args[1:], "--out", str(tmp_path))
    assert res.exit_code == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_fool_vanish_hides_detr_boxes_on_the_saved_png(detr_dir, detr, scene, tmp_path):
    """tasks' detector attacks read DETR's queries as candidates (DetrDetector.candidate_spec)."""
    image = save_png(scene[0], tmp_path / "scene.png")
    assert len(dp.classify(detr, detr.load_image(image), min_score=0.2)[0]) > 0
    res = run_cli("fool", str(image), "--model", f"hf:{detr_dir}", "--vanish", "all", "--min-score", "0.2",
                  "--out", str(tmp_path / "out"), "--json")
    assert res.exit_code == 0, res.output
    (record,) = json.loads(res.stdout)["results"]
    assert record["success"]
    # an independent check of the file as saved
    assert len(dp.classify(detr, detr.load_image(record["output"]), min_score=0.2)[0]) == 0


def test_detr_candidates_carry_their_query_boxes(detr, scene):
    """A relabel acts on the queries whose box lies on a box to relabel: the candidates' boxes are the queries'
    boxes as detected, row for row with their class probabilities, in input pixels (not DETR's resized input)."""
    from deepprobe.engine import forward
    from deepprobe.models.candidates import candidate_spec

    x = torch.nn.functional.interpolate(scene, size=(SIZE * 2, SIZE * 3), mode="bilinear")  # DETR: 64 x 96 inside
    spec = candidate_spec(detr)
    fwd = forward(detr, x, spec.layers, need_logits=False)
    boxes, probs = spec.boxes(fwd.activations, tuple(x.shape[-2:]))[0], spec.read(fwd.activations)[0]
    with torch.no_grad():
        out = detr.net(x)[0]  # the bundle's own forward: normalized, then DetrDetector
    assert boxes.shape == (len(probs), 4)
    assert torch.allclose(boxes[out["queries"]], out["boxes"], atol=1e-3)
    assert torch.allclose(probs[out["queries"], :-1].amax(1), out["scores"], atol=1e-5)
