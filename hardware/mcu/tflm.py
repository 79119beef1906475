"""Cross-check against TensorFlow Lite Micro's interpreter (``pip install tflite-micro``), where installed.

The :class:`QuantizedModel` is written as a ``.tflite`` flatbuffer of int8 ``FULLY_CONNECTED`` ops
(per-channel weight scales, int32 bias, fused ReLU), with the per-dimension quantized observation as its int8
input (scale 1, zero point 0), and run by the TFLM interpreter on the same int8 inputs as the numpy reference.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from robot_rl.hardware.mcu.quantize import QuantizedModel, int8_forward, quantize_input


def to_tflite(qm: QuantizedModel) -> bytes:
    """Serialise ``qm`` as a TFLite model (schema v3) with the flatbuffer object API TFLM ships."""
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as s

    buffers = [s.BufferT()]  # buffer 0: the empty sentinel every .tflite starts with
    tensors: list[Any] = []

    def tensor(name: str, shape: list[int], ttype: int, scale: list[float], zp: list[int], data: bytes | None = None,
               axis: int = 0) -> int:
        buf = 0
        if data is not None:
            b = s.BufferT()
            b.data = list(data)
            buffers.append(b)
            buf = len(buffers) - 1
        t = s.TensorT()
        t.shape, t.type, t.buffer, t.name = shape, ttype, buf, name
        q = s.QuantizationParametersT()
        q.scale, q.zeroPoint, q.quantizedDimension = scale, zp, axis
        t.quantization = q
        tensors.append(t)
        return len(tensors) - 1

    ops = []
    x = tensor("obs_q", [1, qm.obs_dim], s.TensorType.INT8, [1.0], [0])
    for i, layer in enumerate(qm.layers):
        out, inp = layer.weight.shape
        w = tensor(f"w{i}", [out, inp], s.TensorType.INT8, [float(v) for v in layer.weight_scale], [0] * out,
                   np.ascontiguousarray(layer.weight, np.int8).tobytes())
        bias = layer.bias.astype(np.int64) + layer.in_zero_point * layer.weight.astype(np.int64).sum(axis=1)
        b = tensor(f"b{i}", [out], s.TensorType.INT32,
                   [float(np.float32(layer.in_scale) * v) for v in layer.weight_scale], [0] * out,
                   bias.astype("<i4").tobytes())
        y = tensor(f"h{i}", [1, out], s.TensorType.INT8, [layer.out_scale], [layer.out_zero_point])
        op = s.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = 0, [x, w, b], [y]
        op.builtinOptionsType = s.BuiltinOptions.FullyConnectedOptions
        opts = s.FullyConnectedOptionsT()
        opts.fusedActivationFunction = (s.ActivationFunctionType.RELU if layer.relu
                                        else s.ActivationFunctionType.NONE)
        op.builtinOptions = opts
        ops.append(op)
        x = y
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.FULLY_CONNECTED
    code.version = 1
    sub = s.SubGraphT()
    sub.tensors, sub.inputs, sub.outputs, sub.operators, sub.name = tensors, [0], [x], ops, "main"
    model = s.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, [code], [sub], buffers
    model.description = "robot_rl export-mcu int8 student"
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def tflm_check(qm: QuantizedModel, states: np.ndarray, seed: int, n_random: int = 512) -> dict[str, Any] | str:
    """Bit-exactness of the numpy reference vs the TFLM interpreter; a ``skipped: ...`` string without it."""
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError as e:
        return f"skipped: tflite-micro not installed ({e.name}); pip install tflite-micro"
    rng = np.random.default_rng(seed)
    x_q = np.concatenate([rng.integers(-128, 128, (n_random, qm.obs_dim)).astype(np.int8), quantize_input(qm, states)])
    interp = runtime.Interpreter.from_bytes(to_tflite(qm))
    got = np.empty((len(x_q), qm.act_dim), np.int8)
    for i, row in enumerate(x_q):
        interp.set_input(row[None], 0)
        interp.invoke()
        got[i] = interp.get_output(0)[0]
    ref = int8_forward(qm, x_q)
    return {"inputs": int(len(x_q)), "bit_exact": bool((got == ref).all()),
            "max_lsb_diff": int(np.abs(got.astype(np.int32) - ref.astype(np.int32)).max())}
