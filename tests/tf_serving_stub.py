"""A stand-in for TF Serving's REST predict API, for tests only.

The real `tensorflow_model_server` cannot be installed on these machines (no package in PyPI or
Debian ships it, and Docker cannot run here), so tests call this server instead. It serves one
SavedModel the way TF Serving's REST API does:

  POST /v1/models/<name>[/versions/<n>]:predict
    {"signature_name": s, "inputs": {name: value}}    -> {"outputs": {name: value}}  (columnar)
    {"signature_name": s, "instances": [{name: value}]} -> {"predictions": [{name: value}]}  (row)
  GET /v1/models/<name>                               -> model version status

`signature_name` defaults to `serving_default`; JSON values are converted to each input's dtype
from the signature; a signature with a single output returns it without its name; errors are HTTP
400 with {"error": message}, like TF Serving.
"""

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import tensorflow as tf


class ServingError(Exception):
    pass


def to_tensor(name, value, spec):
    """JSON value -> tensor of the signature's dtype, refusing lossy conversions."""
    array = np.asarray(value)
    dtype = spec.dtype
    if dtype == tf.bool:
        if array.dtype != bool:
            raise ServingError(f"input '{name}': expected bool values, got {array.dtype}")
    elif dtype.is_integer:
        if array.dtype.kind not in 'iu':
            raise ServingError(f"input '{name}': expected {dtype.name} values, got "
                               f'{array.dtype} (JSON {json.dumps(value)[:40]}...)')
        if array.size and (array.min() < dtype.min or array.max() > dtype.max):
            raise ServingError(f"input '{name}': values out of range for {dtype.name}")
    elif dtype.is_floating:
        if array.dtype.kind not in 'iuf':
            raise ServingError(f"input '{name}': expected numbers, got {array.dtype}")
    return tf.constant(array, dtype)


def to_json(value):
    value = value.numpy() if hasattr(value, 'numpy') else value
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        if value.dtype.kind in 'SO':
            return [to_json(v) for v in value.tolist()]
        return value.tolist()
    return value.item() if hasattr(value, 'item') else value


class TFServingStub:
    """Serves `model_dir` as model `name` on 127.0.0.1 (a free port) in a background thread."""

    def __init__(self, model_dir, name='model', version=1):
        self.model = tf.saved_model.load(str(model_dir))
        self.name = name
        self.version = version
        self.requests = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if re.fullmatch(rf'/v1/models/{stub.name}(/versions/\d+)?', self.path):
                    return self._reply(200, {'model_version_status': [
                        {'version': str(stub.version), 'state': 'AVAILABLE',
                         'status': {'error_code': 'OK', 'error_message': ''}}]})
                self._reply(404, {'error': f'Servable not found for request: {self.path}'})

            def do_POST(self):
                pattern = rf'/v1/models/{stub.name}(/versions/(\d+))?:predict'
                match = re.fullmatch(pattern, self.path)
                if not match:
                    return self._reply(404, {'error': f'Malformed request: POST {self.path}'})
                if match.group(2) and int(match.group(2)) != stub.version:
                    return self._reply(404, {'error': f'Servable not found for request: '
                                                      f'Specific({stub.name}, {match.group(2)})'})
                try:
                    length = int(self.headers.get('Content-Length', 0))
                    body = json.loads(self.rfile.read(length))
                    self._reply(200, stub.predict(body))
                except (ServingError, ValueError, TypeError, tf.errors.OpError) as e:
                    message = getattr(e, 'message', None) or str(e)
                    self._reply(400, {'error': message})

            def _reply(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f'http://127.0.0.1:{self.server.server_address[1]}/v1/models/{self.name}'

    def predict(self, body):
        self.requests += 1
        if not isinstance(body, dict):
            raise ServingError('JSON body must be an object')
        name = body.get('signature_name', 'serving_default')
        if name not in self.model.signatures:
            raise ServingError(f'Serving signature name: "{name}" not found in signature def')
        function = self.model.signatures[name]
        specs = function.structured_input_signature[1]
        if ('inputs' in body) == ('instances' in body):
            raise ServingError("JSON body must have exactly one of 'inputs' or 'instances'")
        if 'inputs' in body:
            inputs = body['inputs']
            if not isinstance(inputs, dict):
                if len(specs) != 1:
                    raise ServingError('a bare "inputs" value needs a single-input signature')
                inputs = {next(iter(specs)): inputs}
            rows = False
        else:
            instances = body['instances']
            if not isinstance(instances, list) or not all(isinstance(i, dict) for i in instances):
                raise ServingError("'instances' must be a list of objects")
            inputs = {k: [row.get(k) for row in instances] for k in specs}
            rows = True
        unknown = sorted(set(inputs) - set(specs))
        if unknown:
            raise ServingError(f'input tensor alias not found in signature: {unknown[0]}. '
                               f'Inputs expected to be in the set {{{",".join(sorted(specs))}}}.')
        missing = sorted(set(specs) - set(inputs))
        if missing:
            raise ServingError(f"missing input '{missing[0]}' of signature '{name}'")
        tensors = {k: to_tensor(k, v, specs[k]) for k, v in inputs.items()}
        outputs = {k: to_json(v) for k, v in function(**tensors).items()}
        if rows:
            count = len(body['instances'])
            return {'predictions': [{k: v[i] for k, v in outputs.items()} for i in range(count)]}
        if len(outputs) == 1:
            return {'outputs': next(iter(outputs.values()))}
        return {'outputs': outputs}

    def close(self):
        self.server.shutdown()
        self.server.server_close()
