"""ONNX -> differentiable torch via onnx2torch, plus the Pad-18 converter onnx2torch lacks."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from ..errors import DeepprobeError

_REGISTERED = False


def register_pad18() -> None:
    """Pad-18/19 only add an optional `axes` input; without it they behave exactly like Pad-13."""
    global _REGISTERED
    if _REGISTERED:
        return
    from onnx2torch.node_converters.pad import OnnxPadDynamic, _onnx_to_torch_mode
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription, add_converter
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

    def convert(node, graph):  # noqa: ARG001 - onnx2torch's converter signature
        inputs = list(node.input_values)
        if len(inputs) > 3 and inputs[3]:
            raise DeepprobeError("ONNX Pad with an `axes` input is not supported")
        return OperationConverterResult(
            torch_module=OnnxPadDynamic(mode=_onnx_to_torch_mode(node.attributes.get("mode", "constant"))),
            onnx_mapping=OnnxMapping(inputs=tuple(inputs[:3]), outputs=node.output_values))

    for version in (18, 19, 21, 23):
        if OperationDescription(domain="", operation_type="Pad", version=version) not in _CONVERTER_REGISTRY:
            add_converter(operation_type="Pad", version=version)(convert)
    _REGISTERED = True


def onnx_to_torch(path: str | Path) -> tuple[nn.Module, tuple[int, int]]:
    """Convert an ONNX image model; also return its static (H, W) input size (224x224 when dynamic)."""
    import onnx
    from onnx2torch import convert

    register_pad18()
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001
        raise DeepprobeError(f"cannot read ONNX model {Path(path).name}: {str(exc)[:200]}") from exc
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    size = (dims[2], dims[3]) if len(dims) == 4 and dims[2] > 0 and dims[3] > 0 else (224, 224)
    try:
        net = convert(model)
    except Exception as exc:  # noqa: BLE001
        raise DeepprobeError(f"onnx2torch cannot convert {Path(path).name}: {str(exc)[:200]}") from exc
    return net.eval(), size
