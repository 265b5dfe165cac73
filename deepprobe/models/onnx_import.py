"""ONNX -> differentiable torch via onnx2torch, for the files PyTorch's own exporters write.

`torch.onnx.export` output does not go through onnx2torch as it is: the TorchScript exporter shares
folded weights through `Identity` nodes (onnx2torch wants a Conv's weights as initializers), the dynamo
exporter writes opset 18 (Reduce* take their axes as an input; Pad takes `axes`) and, for a fixed batch of
1, bakes that batch into Reshape shapes. So the graph is normalised first (onnxoptimizer passes, batch-free
reshapes), the missing opset-18 converters are registered, and the converted module is checked against
onnxruntime on a test batch before anyone uses it.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import DeepprobeError

_REGISTERED = False
# onnxoptimizer passes that leave the computation unchanged and give onnx2torch the graph it expects.
NORMALISING_PASSES = ("extract_constant_to_initializer", "eliminate_identity", "eliminate_deadend")
# Reduce operators whose `axes` attribute became an input in opset 18 (ReduceSum already in opset 13).
REDUCE_18 = ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
             "ReduceProd", "ReduceSumSquare")
# Operators whose newer versions only accept more tensor types (int4, float8...): the converter of the version
# onnx2torch knows applies unchanged. The dynamo exporter writes opset 20 for a dynamic batch.
SAME_AS_BEFORE = {"Shape": (15, (19, 21, 23)), "Reshape": (14, (19, 21, 23))}
CHECK_RTOL, CHECK_ATOL = 1e-3, 1e-4  # converted vs onnxruntime, relative to the largest output


def register_converters() -> None:
    """Add the opset-18+ converters onnx2torch 1.5 lacks: Pad with `axes`, Reduce* with axes as an input,
    Gelu, and newer versions of Shape/Reshape that only widen the types."""
    global _REGISTERED
    if _REGISTERED:
        return
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription, add_converter

    def add(operation: str, versions: tuple[int, ...], convert) -> None:
        for version in versions:
            if OperationDescription(domain="", operation_type=operation, version=version) not in _CONVERTER_REGISTRY:
                add_converter(operation_type=operation, version=version)(convert)

    add("Pad", (18, 19, 21, 23), _convert_pad18)
    for operation in REDUCE_18:
        add(operation, (18, 20) if operation in ("ReduceMax", "ReduceMin") else (18,), _convert_reduce18)
    add("Gelu", (20,), _convert_gelu20)
    for operation, (known, newer) in SAME_AS_BEFORE.items():
        add(operation, newer, _CONVERTER_REGISTRY[OperationDescription(domain="", operation_type=operation,
                                                                       version=known)])
    _REGISTERED = True


def _convert_pad18(node, graph):  # noqa: ARG001 - onnx2torch's converter signature
    """Pad-18/19 only add an optional `axes` input; without it they behave exactly like Pad-13."""
    from onnx2torch.node_converters.pad import OnnxPadDynamic, _onnx_to_torch_mode
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

    inputs = list(node.input_values)
    if len(inputs) > 3 and inputs[3]:
        raise DeepprobeError("ONNX Pad with an `axes` input is not supported")
    return OperationConverterResult(
        torch_module=OnnxPadDynamic(mode=_onnx_to_torch_mode(node.attributes.get("mode", "constant"))),
        onnx_mapping=OnnxMapping(inputs=tuple(inputs[:3]), outputs=node.output_values))


def _convert_reduce18(node, graph):
    """Reduce*-18: the axes come as a (constant) second input instead of an attribute."""
    from onnx2torch.node_converters.reduce import OnnxReduceStaticAxes
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult, get_const_value

    inputs = list(node.input_values)
    axes = None
    if len(inputs) > 1 and inputs[1]:
        try:
            axes = [int(a) for a in torch.as_tensor(get_const_value(inputs[1], graph)).flatten().tolist()]
        except KeyError as exc:
            raise DeepprobeError(f"ONNX {node.operation_type} with axes computed at run time is not supported") from exc
    mapping = OnnxMapping(inputs=(inputs[0],), outputs=node.output_values)
    if not axes and node.attributes.get("noop_with_empty_axes", 0):
        return OperationConverterResult(torch_module=nn.Identity(), onnx_mapping=mapping)
    return OperationConverterResult(
        torch_module=OnnxReduceStaticAxes(operation_type=node.operation_type, axes=axes or None,
                                          keepdims=node.attributes.get("keepdims", 1)),
        onnx_mapping=mapping)


def _convert_gelu20(node, graph):  # noqa: ARG001 - onnx2torch's converter signature
    """Gelu (opset 20): torch's GELU, exact or with the tanh approximation."""
    from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node

    approximate = node.attributes.get("approximate", "none")
    return OperationConverterResult(torch_module=nn.GELU(approximate="tanh" if approximate == "tanh" else "none"),
                                    onnx_mapping=onnx_mapping_from_node(node))


def onnx_to_torch(path: str | Path, check: bool = True) -> tuple[nn.Module, tuple[int, int]]:
    """Convert an ONNX image model; also return its static (H, W) input size (224x224 when dynamic).

    check: run the converted module and onnxruntime on the same test batch and refuse a conversion that
    computes something else.
    """
    import onnx
    from onnx2torch import convert

    register_converters()
    name = Path(path).name
    try:
        model = onnx.load(str(path))  # external data (PyTorch's dynamo exporter writes NAME.onnx.data) beside it
    except Exception as exc:  # noqa: BLE001
        raise DeepprobeError(f"cannot read ONNX model {name}: {str(exc)[:200]}") from exc
    if not model.graph.input:
        raise DeepprobeError(f"ONNX model {name} has no input")
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    size = (dims[2], dims[3]) if len(dims) == 4 and dims[2] > 0 and dims[3] > 0 else (224, 224)
    channels = dims[1] if len(dims) == 4 and dims[1] > 0 else 3
    fixed_batch = bool(dims) and dims[0] == 1
    try:
        net = convert(normalise_graph(model, name))
    except DeepprobeError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise DeepprobeError(f"onnx2torch cannot convert {name}: {str(exc)[:200]}") from exc
    net.eval()
    if check:
        check_against_onnxruntime(net, path, (channels, *size), fixed_batch)
    return net, size


def normalise_graph(model, name: str = "model"):
    """The same computation in the form onnx2torch converts: onnxoptimizer's identity/constant passes, and
    simpler Reshapes (see `simplify_reshapes`)."""
    import onnxoptimizer

    try:
        model = onnxoptimizer.optimize(model, list(NORMALISING_PASSES))
    except Exception as exc:  # noqa: BLE001 - convert the graph as it is; say why it was not normalised
        warnings.warn(f"{name}: onnxoptimizer could not normalise the graph ({str(exc)[:120]}); converting it as is",
                      stacklevel=2)
    simplify_reshapes(model)
    return model


def simplify_reshapes(model) -> None:
    """Reshapes with constant shapes, in the form onnx2torch converts and free of a fixed batch of 1.

    `allowzero=1` (the dynamo exporter sets it) only matters for a 0 in the shape: dropped where there is
    none. A graph exported for a fixed batch of 1 bakes that 1 into shapes ([1, 512] before the classifier);
    -1 there computes the same thing for one image (it infers 1) and lets a batch through, so those shapes
    are rewritten and the input's batch dimension made symbolic.
    """
    from onnx import numpy_helper

    graph = model.graph
    dims = graph.input[0].type.tensor_type.shape.dim
    batch_of_one = bool(dims) and dims[0].dim_value == 1
    initializers = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in initializers:
            continue
        shape = numpy_helper.to_array(initializers[node.input[1]])
        if shape.ndim != 1 or (shape == 0).any():
            continue
        for attribute in [a for a in node.attribute if a.name == "allowzero"]:
            node.attribute.remove(attribute)
        if not batch_of_one or not len(shape) or shape[0] != 1 or (shape == -1).any():
            continue
        free = shape.copy()
        free[0] = -1
        new_name = f"{node.input[1]}__batch_free"
        if new_name not in initializers:  # a shape may be shared with other nodes: give this node its own
            initializers[new_name] = numpy_helper.from_array(free, new_name)
            graph.initializer.append(initializers[new_name])
        node.input[1] = new_name
    if batch_of_one:
        dims[0].ClearField("dim_value")
        dims[0].dim_param = "batch"


def check_against_onnxruntime(net: nn.Module, path: str | Path, shape: tuple[int, int, int], fixed_batch: bool) -> float:
    """Largest |converted - onnxruntime| on a seeded test batch of two (one at a time for a fixed batch of
    1); DeepprobeError when they disagree, a warning when onnxruntime cannot run the file."""
    import onnxruntime as ort

    name = Path(path).name
    x = torch.rand((2, *shape), generator=torch.Generator().manual_seed(0))
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed = session.get_inputs()[0].name
        parts = [x[i:i + 1] for i in range(2)] if fixed_batch else [x]
        expected = torch.cat([torch.from_numpy(session.run(None, {feed: p.numpy()})[0]) for p in parts]).float()
    except Exception as exc:  # noqa: BLE001 - the conversion may still be fine; say it was not checked
        warnings.warn(f"{name}: not checked against onnxruntime ({str(exc).splitlines()[0][:160]})", stacklevel=2)
        return float("nan")
    one_at_a_time = (f"{name} was exported for one image at a time and its graph cannot take a batch: export it "
                     "with a dynamic batch dimension (torch.onnx.export(..., dynamic_shapes=({0: "
                     "torch.export.Dim('batch')},)), or dynamic_axes={INPUT: {0: 'batch'}} with dynamo=False)")
    try:
        with torch.no_grad():
            got = net(x)
    except Exception as exc:  # noqa: BLE001
        if fixed_batch:
            raise DeepprobeError(one_at_a_time) from exc
        raise DeepprobeError(f"the converted {name} fails on a test batch ({str(exc).splitlines()[0][:160]})") from exc
    got = (got[0] if isinstance(got, (tuple, list)) else got).float()
    if got.shape != expected.shape:
        if fixed_batch and got.shape[1:] == expected.shape[1:]:
            raise DeepprobeError(one_at_a_time)
        raise DeepprobeError(f"the converted {name} gives shape {tuple(got.shape)}, onnxruntime {tuple(expected.shape)}")
    diff = float((got - expected).abs().max())
    if not diff <= CHECK_ATOL + CHECK_RTOL * float(expected.abs().max()):
        raise DeepprobeError(f"the converted {name} disagrees with onnxruntime (largest difference {diff:.3g} on a "
                             "test batch); the conversion is not trusted")
    return diff
