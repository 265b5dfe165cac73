"""What Zennit's LRP composites need from a CNN before they apply: merged BatchNorms, residual sums as modules,
and a check that every layer of the network is one a rule or canonizer covers.

Why canonizers: an LRP rule is attached to a module, and relevance flows unchanged through anything that is not
one. A BatchNorm left beside its convolution is an affine map the conv rule never sees (Zennit passes relevance
through it), and a residual `x + f(x)` written as a plain `+` hands its full relevance to *both* operands, which
doubles it at every skip. Zennit's own canonizers merge BatchNorms inside `nn.Sequential` and rewrite torchvision's
ResNet blocks to sum through a `zennit.layer.Sum` module (the Norm rule then splits relevance by contribution);
this module does the same for the layouts deepprobe's model sources produce:
- BatchNorm: merged into the convolution or linear layer whose output it reads, found by following tensors through
  one forward pass (timm's BatchNormAct2d, torchvision's Conv2dNormActivation, any user network alike);
- residual blocks: timm's EfficientNet/MobileNet blocks (`has_skip`) and torchvision's MobileNet/EfficientNet
  blocks (`use_res_connect`) run their branch without the skip, which is then added by a Sum module; timm's
  ResNet blocks get the same forward rewrite Zennit ships for torchvision's ResNets (whose canonizers are used as
  they are).
Anything else (squeeze-excitation gates, attention, layer norms, unknown blocks whose forward may add or multiply
tensors) is named by `uncovered()`, and LRP refuses the model in one line instead of returning a map that is not LRP.
"""
from __future__ import annotations

import weakref

import torch
from torch import nn

# Leaf layers the composites cover (Zennit's rule map or plain relevance routing).
_SAFE_LEAVES = (nn.Identity, nn.Flatten, nn.Dropout, nn.Dropout2d, nn.ZeroPad2d, nn.ConstantPad2d,
                nn.MaxPool2d, nn.AdaptiveMaxPool2d)
# Containers whose forward only chains their children (with pooling, flattening, concatenation, resizing or
# dropout in between): qualified class names, so optional libraries are never imported to check them.
_SAFE_CONTAINERS = {
    "torch.nn.modules.container.Sequential", "torch.nn.modules.container.ModuleList",
    "timm.models.efficientnet.EfficientNet", "timm.models.mobilenetv3.MobileNetV3", "timm.models.resnet.ResNet",
    "timm.models.vgg.VGG", "timm.layers.norm_act.BatchNormAct2d", "timm.layers.adaptive_avgmax_pool.SelectAdaptivePool2d",
    "timm.layers.classifier.ClassifierHead", "timm.layers.drop.DropPath", "timm.layers.conv2d_same.Conv2dSame",
    "timm.models._efficientnet_blocks.ConvBnAct",
    "torchvision.models.resnet.ResNet", "torchvision.models.vgg.VGG", "torchvision.models.alexnet.AlexNet",
    "torchvision.models.mobilenetv2.MobileNetV2", "torchvision.models.mobilenetv3.MobileNetV3",
    "torchvision.models.efficientnet.EfficientNet", "torchvision.ops.misc.Conv2dNormActivation",
    "torchvision.ops.stochastic_depth.StochasticDepth", "torchvision.models._utils.IntermediateLayerGetter",
    "torchvision.models.segmentation.fcn.FCN", "torchvision.models.segmentation.fcn.FCNHead",
    "zennit.layer.Sum",
    # the bundled EfficientNet-Lite, rebuilt in plain torch with timm's names and structure (models/efficientnet_lite)
    "deepprobe.models.efficientnet_lite.EfficientNet", "deepprobe.models.efficientnet_lite.SelectAdaptivePool2d",
    "deepprobe.models.efficientnet_lite.BatchNormAct2d", "deepprobe.models.efficientnet_lite.Conv2dSame",
}
# Blocks with a residual `+` that a canonizer below turns into a Sum module.
_SKIP_FLAGS = {  # class -> the flag that switches the skip off while the branch runs
    "timm.models._efficientnet_blocks.DepthwiseSeparableConv": "has_skip",
    "timm.models._efficientnet_blocks.InvertedResidual": "has_skip",
    "deepprobe.models.efficientnet_lite.DepthwiseSeparableConv": "has_skip",
    "deepprobe.models.efficientnet_lite.InvertedResidual": "has_skip",
    "timm.models._efficientnet_blocks.EdgeResidual": "has_skip",
    "timm.models._efficientnet_blocks.UniversalInvertedResidual": "has_skip",
    "torchvision.models.mobilenetv2.InvertedResidual": "use_res_connect",
    "torchvision.models.mobilenetv3.InvertedResidual": "use_res_connect",
    "torchvision.models.efficientnet.MBConv": "use_res_connect",
    "torchvision.models.efficientnet.FusedMBConv": "use_res_connect",
}
_TIMM_RESNET_BLOCKS = {"timm.models.resnet.BasicBlock", "timm.models.resnet.Bottleneck"}
_ZENNIT_RESNET_BLOCKS = {"torchvision.models.resnet.BasicBlock", "torchvision.models.resnet.Bottleneck"}


def qualname(module: nn.Module) -> str:
    return f"{type(module).__module__}.{type(module).__qualname__}"


def _covered_leaf(module: nn.Module) -> bool:
    from zennit.types import Activation, AvgPool, BatchNorm, Linear

    if isinstance(module, (nn.MultiheadAttention,)):  # Zennit lists it among activations; it is not one here
        return False
    return isinstance(module, (Linear, BatchNorm, Activation, AvgPool) + _SAFE_LEAVES)


def uncovered(net: nn.Module) -> list[tuple[str, str]]:
    """(name, class name) of the modules of `net` that no rule or canonizer covers (children of such a module are
    not listed again)."""
    bad: list[tuple[str, str]] = []
    for name, module in net.named_modules():
        if any(name.startswith(b + ".") for b, _ in bad):
            continue
        q = qualname(module)
        if module is net and q.startswith("deepprobe."):
            continue
        if (q in _SAFE_CONTAINERS or q in _SKIP_FLAGS or q in _TIMM_RESNET_BLOCKS or q in _ZENNIT_RESNET_BLOCKS
                or _covered_leaf(module)):
            if q in _TIMM_RESNET_BLOCKS | _ZENNIT_RESNET_BLOCKS and getattr(module, "se", None) is not None:
                bad.append((f"{name}.se", qualname(module.se)))
            continue
        if module is net:
            return [("the model", type(module).__name__)]  # e.g. a detector: its heads are not layers LRP knows
        bad.append((name, type(module).__name__))
    return bad


def is_transformer(net: nn.Module) -> bool:
    """A vision transformer (timm, torchvision or Hugging Face attention blocks)."""
    return any(isinstance(m, nn.MultiheadAttention) or hasattr(m, "fused_attn") or "Attention" in type(m).__name__
               for m in net.modules())


# ------------------------------------------------------------------------------------------ BatchNorm
def _merge_classes():
    from zennit.canonizers import MergeBatchNorm

    class PairedMergeBatchNorm(MergeBatchNorm):
        """Zennit's MergeBatchNorm on explicit (linear, batch norm) module pairs.

        Also folds the BatchNorm's eps: Zennit 0.5 leaves the emptied BatchNorm computing x / sqrt(1 + eps)
        (its running variance is set to 1 while eps stays), which shrinks every merged layer's output a little
        (2.4% on Lite0's logits, eps 1e-3 x 49 layers); a running variance of 1 - eps makes it the identity.
        """

        def __init__(self, pairs=()):
            super().__init__()
            self.pairs = list(pairs)

        def apply(self, root_module):
            instances = []
            for linear, batch_norm in self.pairs:
                instance = self.copy()
                instance.register([linear], batch_norm)
                instances.append(instance)
            return instances

        def copy(self):
            return PairedMergeBatchNorm(self.pairs)

        @staticmethod
        def merge_batch_norm(modules, batch_norm):
            MergeBatchNorm.merge_batch_norm(modules, batch_norm)
            batch_norm.running_var.data = batch_norm.running_var.data - batch_norm.eps

    return PairedMergeBatchNorm


_PAIRS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def batch_norm_pairs(probe, x: torch.Tensor) -> list[tuple[nn.Module, nn.Module]]:
    """(linear, batch norm) pairs where the BatchNorm reads the linear layer's output and nothing else reads it,
    found by following tensors through one forward pass of one image (cached per network)."""
    from zennit.types import BatchNorm, Linear

    inner = probe.inner
    if inner in _PAIRS:
        return _PAIRS[inner]
    produced: dict[int, tuple[torch.Tensor, nn.Module]] = {}
    readers: dict[int, list[nn.Module]] = {}
    modules = [m for m in inner.modules() if isinstance(m, (Linear, BatchNorm))]

    def after(module, _inputs, output):
        if isinstance(module, Linear) and isinstance(output, torch.Tensor):
            produced[id(output)] = (output, module)  # the tensor is kept alive, so its id is not reused

    def before(module, inputs):
        for t in inputs:
            if isinstance(t, torch.Tensor) and id(t) in produced:
                readers.setdefault(id(t), []).append(module)

    # readers: every leaf and every BatchNorm (timm's BatchNormAct2d has children of its own)
    handles = [m.register_forward_pre_hook(before) for m in inner.modules()
               if not list(m.children()) or isinstance(m, BatchNorm)]
    handles += [m.register_forward_hook(after) for m in modules]
    try:
        with torch.no_grad():
            probe.net(x[:1])
    finally:
        for h in handles:
            h.remove()
    pairs, merged = [], set()
    for key, (_, linear) in produced.items():
        users = readers.get(key, [])
        if len(users) == 1 and isinstance(users[0], BatchNorm) and id(users[0]) not in merged:
            pairs.append((linear, users[0]))
            merged.add(id(users[0]))
    _PAIRS[inner] = pairs
    return pairs


# ------------------------------------------------------------------------------------------ residual sums
def _skip_forward(flag: str):
    def forward(self, x):
        setattr(self, flag, False)  # the block's own forward, without its `+ shortcut`
        try:
            branch = type(self).forward(self, x)
        finally:
            setattr(self, flag, True)
        return self.canonizer_sum(torch.stack([x, branch], dim=-1))

    return forward


def _timm_basic_forward(self, x):
    """timm.models.resnet.BasicBlock.forward with the residual `+=` through a Sum module (as Zennit's
    ResNetBasicBlockCanonizer rewrites torchvision's)."""
    shortcut = x
    x = self.aa(self.act1(self.drop_block(self.bn1(self.conv1(x)))))
    x = self.bn2(self.conv2(x))
    if self.drop_path is not None:
        x = self.drop_path(x)
    if self.downsample is not None:
        shortcut = self.downsample(shortcut)
    return self.act2(self.canonizer_sum(torch.stack([shortcut, x], dim=-1)))


def _timm_bottleneck_forward(self, x):
    """timm.models.resnet.Bottleneck.forward with the residual `+=` through a Sum module."""
    shortcut = x
    x = self.act1(self.bn1(self.conv1(x)))
    x = self.aa(self.act2(self.drop_block(self.bn2(self.conv2(x)))))
    x = self.bn3(self.conv3(x))
    if self.drop_path is not None:
        x = self.drop_path(x)
    if self.downsample is not None:
        shortcut = self.downsample(shortcut)
    return self.act3(self.canonizer_sum(torch.stack([shortcut, x], dim=-1)))


def _residual_attributes(name: str, module: nn.Module) -> dict | None:
    from zennit.layer import Sum

    q = qualname(module)
    if q in _SKIP_FLAGS and getattr(module, _SKIP_FLAGS[q], False):
        forward = _skip_forward(_SKIP_FLAGS[q])
    elif q == "timm.models.resnet.BasicBlock":
        forward = _timm_basic_forward
    elif q == "timm.models.resnet.Bottleneck":
        forward = _timm_bottleneck_forward
    else:
        return None
    return {"forward": forward.__get__(module), "canonizer_sum": Sum()}


_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
CANONIZED_TOLERANCE = 1e-3  # largest change of the logits canonizing may cause, relative to their range


def canonizers(probe, x: torch.Tensor) -> list:
    """The Zennit canonizers for this network: BatchNorm merges and residual sums.

    The first time a network is seen, its output is computed with and without them: canonizing must not change
    what the model computes (a BatchNorm merged into a convolution whose output something else also reads
    would), so a difference is an error rather than a different model explained.
    """
    from zennit.canonizers import AttributeCanonizer
    from zennit.torchvision import ResNetBasicBlockCanonizer, ResNetBottleneckCanonizer

    merge = _merge_classes()(batch_norm_pairs(probe, x))
    result = [merge, AttributeCanonizer(_residual_attributes), ResNetBasicBlockCanonizer(), ResNetBottleneckCanonizer()]
    if probe.inner not in _CHECKED:
        _check_unchanged(probe, x[:1], result)
        _CHECKED[probe.inner] = True
    return result


def _check_unchanged(probe, x: torch.Tensor, found: list) -> None:
    from ..errors import DeepprobeError

    with torch.no_grad():
        plain = probe.net(x).float()
        instances = []
        try:
            for canonizer in found:
                instances += canonizer.apply(probe.net)
            canonized = probe.net(x).float()
        finally:
            for instance in reversed(instances):
                instance.remove()
    scale = float(plain.max() - plain.min()) or 1.0
    change = float((plain - canonized).abs().max()) / scale
    if not change <= CANONIZED_TOLERANCE:
        raise DeepprobeError(f"lrp: merging BatchNorms and residual sums (Zennit's canonizers) changed "
                             f"{probe.spec}'s output by {change:.1%} of its range; its layout is not one LRP covers")
