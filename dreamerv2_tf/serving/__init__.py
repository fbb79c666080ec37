"""Serving: the exported policy module, its portable core (draws as inputs) with the ONNX and
TFLite converters, and loading a policy from a checkpoint, a SavedModel or (without TensorFlow)
an ONNX or TFLite file."""
