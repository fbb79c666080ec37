"""A stand-in for TF Serving's gRPC PredictionService, for tests only.

The real `tensorflow_model_server` cannot be installed on these machines (see tf_serving_stub.py),
so tests call this server instead. It implements `PredictionService.Predict` from the
`tensorflow-serving-api` package's own service definitions on a loopback port and runs one
SavedModel the way TF Serving does: `model_spec.name` (and `version`, if set) must match,
`model_spec.signature_name` defaults to `serving_default`, inputs and outputs are TensorProtos,
`output_filter` keeps some outputs. Errors carry TF Serving's status codes: NOT_FOUND for an
unknown model or version, INVALID_ARGUMENT (with the input named) for bad inputs and for the
graph's own checks.
"""

from concurrent import futures

import grpc
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, model, name, version):
        self.model, self.name, self.version = model, name, version
        self.requests = 0

    def Predict(self, request, context):
        self.requests += 1
        spec = request.model_spec
        if spec.name != self.name or (spec.HasField('version') and
                                      spec.version.value != self.version):
            version = spec.version.value if spec.HasField('version') else 'latest'
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f'Servable not found for request: Specific({spec.name}, {version})')
        name = spec.signature_name or 'serving_default'
        if name not in self.model.signatures:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f'Serving signature name: "{name}" not found in signature def')
        function = self.model.signatures[name]
        specs = function.structured_input_signature[1]
        unknown = sorted(set(request.inputs) - set(specs))
        if unknown:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f'input tensor alias not found in signature: {unknown[0]}. Inputs '
                          f'expected to be in the set {{{",".join(sorted(specs))}}}.')
        missing = sorted(set(specs) - set(request.inputs))
        if missing:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"missing input '{missing[0]}' of signature '{name}'")
        tensors = {}
        for key, proto in request.inputs.items():
            dtype = tf.as_dtype(proto.dtype)
            if dtype != specs[key].dtype:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"input '{key}': expected {specs[key].dtype.name}, got {dtype.name}")
            tensors[key] = tf.constant(tf.make_ndarray(proto))
        try:
            outputs = function(**tensors)
        except (TypeError, ValueError, tf.errors.OpError) as e:
            # Eager errors quote the graph's assertion text with escaped quotes; TF Serving's
            # session returns it plainly.
            message = (getattr(e, 'message', None) or str(e)).replace("\\'", "'")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
        keep = set(request.output_filter) or set(outputs)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = self.name
        response.model_spec.version.value = self.version
        response.model_spec.signature_name = name
        for key in sorted(keep):
            response.outputs[key].CopyFrom(tf.make_tensor_proto(outputs[key].numpy()))
        return response


class GrpcServingStub:
    """Serves `model_dir` as model `name` on 127.0.0.1 (a free port) in background threads."""

    def __init__(self, model_dir, name='model', version=1):
        self.service = PredictionService(tf.saved_model.load(str(model_dir)), name, version)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(self.service,
                                                                            self.server)
        self.port = self.server.add_insecure_port('127.0.0.1:0')
        self.server.start()

    @property
    def target(self):
        return f'127.0.0.1:{self.port}'

    @property
    def requests(self):
        return self.service.requests

    def close(self):
        self.server.stop(grace=None)
