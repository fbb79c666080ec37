"""Converting the policy core (`serving/core.py`) to ONNX (tf2onnx) and LiteRT (TFLite flatbuffer,
built-in ops only). Both need the optional `export` extra: `pip install -e ".[export]"`."""

import json
import logging
import pathlib

import tensorflow as tf

from dreamerv2_tf.serving.core import SIGNATURE
from dreamerv2_tf.serving.portable import need  # TF-free; the same message for every extra

logger = logging.getLogger(__name__)

ONNX_FILE = 'policy.onnx'
TFLITE_FILE = 'policy.tflite'
# onnxruntime runs opsets up to its own release's; 17 is tf2onnx's well-tested one, and every
# operator the core uses (Conv, Gemm, Elu, LayerNormalization parts, ArgMax, OneHot, Log) exists.
ONNX_OPSET = 17


def to_onnx(core, metadata, path):
    """Writes the core as an ONNX model to `path`, with `metadata` (JSON) in its metadata_props
    under 'dreamerv2_tf' so that the file describes itself."""
    tf2onnx = need('tf2onnx', 'tf2onnx')
    need('onnx', 'onnx')
    function = core.flat_function()
    model, _ = tf2onnx.convert.from_function(
        function, input_signature=list(core.specs.values()), opset=ONNX_OPSET)
    entry = model.metadata_props.add()
    entry.key, entry.value = 'dreamerv2_tf', json.dumps(metadata)
    names = [i.name for i in model.graph.input]
    if names != list(core.specs):
        raise RuntimeError(f'tf2onnx named the inputs {names}, expected {list(core.specs)}')
    outputs = sorted(o.name for o in model.graph.output)
    if outputs != sorted(metadata['outputs']):
        raise RuntimeError(f'tf2onnx named the outputs {outputs}, expected '
                           f"{sorted(metadata['outputs'])}")
    pathlib.Path(path).write_bytes(model.SerializeToString())
    return path


def to_tflite(saved_model_dir, path):
    """Writes the SavedModel's core signature as a TFLite flatbuffer with built-in ops only (no
    Flex/select TF ops, which LiteRT's interpreter does not ship)."""
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir),
                                                         signature_keys=[SIGNATURE])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    pathlib.Path(path).write_bytes(converter.convert())
    return path
