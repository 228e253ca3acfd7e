"""Write the quantised ONNX fixtures of tests/test_formats.py with ONNX Runtime's own
quantiser (not run by the tests).

    python tests/data/make_onnx_quantised.py

A float model (Conv 24x8x3x3 -> Flatten -> MatMul 96x40, seeded weights, also saved)
quantised three ways: dynamic (ConvInteger/MatMulInteger, uint8), static QDQ
(DequantizeLinear, per-channel int8) and static QOperator (QLinearConv/QLinearMatMul).
Made with onnx 1.23.2 and onnxruntime 1.24.
"""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

HERE = Path(__file__).parent / "onnx"


class _Inputs(CalibrationDataReader):
    def __init__(self) -> None:
        self.left = 4

    def get_next(self) -> dict | None:
        if not self.left:
            return None
        self.left -= 1
        rng = np.random.default_rng(self.left)
        return {"x": rng.standard_normal((1, 8, 6, 6), dtype=np.float32)}


def main() -> None:
    rng = np.random.default_rng(0)
    conv = rng.standard_normal((24, 8, 3, 3), dtype=np.float32) * 0.2
    dense = rng.standard_normal((96 * 4 * 4, 40), dtype=np.float32) * 0.05
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "conv.weight"], ["c"], name="conv"),
         helper.make_node("Flatten", ["c"], ["f"], axis=1),
         helper.make_node("Reshape", ["f", "shape"], ["r"]),
         helper.make_node("MatMul", ["r", "dense.weight"], ["y"], name="dense")],
        "float", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 40])],
        [numpy_helper.from_array(conv, "conv.weight"),
         numpy_helper.from_array(dense[: 24 * 4 * 4], "dense.weight"),
         numpy_helper.from_array(np.array([1, 24 * 16], dtype=np.int64), "shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    HERE.mkdir(exist_ok=True)
    onnx.save(model, HERE / "float.onnx")
    quantize_dynamic(HERE / "float.onnx", HERE / "dynamic.onnx", weight_type=QuantType.QUInt8)
    for fmt, name in ((QuantFormat.QDQ, "qdq.onnx"), (QuantFormat.QOperator, "qoperator.onnx")):
        quantize_static(HERE / "float.onnx", HERE / name, _Inputs(), quant_format=fmt,
                        per_channel=True, weight_type=QuantType.QInt8)


if __name__ == "__main__":
    main()
