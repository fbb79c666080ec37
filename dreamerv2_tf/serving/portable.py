"""Running an exported policy core (`policy.onnx`, `policy.tflite`) without TensorFlow: with
onnxruntime or with the ai-edge-litert interpreter, each imported only when its format is
loaded. This module imports neither TensorFlow nor any training code.

    policy = load('export/models/pong/3000/policy.tflite', seed=0)
    state = policy.initial_state(1)
    action, state = policy(obs, state, 'eval')       # obs: the encoder's keys and is_first

`CorePolicy` draws the noise inputs with NumPy as the file's metadata (`policy.json`) says:
mode noise for eval actions, random noise for sampled ones and for the latent.
"""

import json
import pathlib

import numpy as np

METADATA = 'policy.json'
FORMATS = {'.onnx': 'onnx', '.tflite': 'tflite'}
TINY = np.finfo(np.float32).tiny


def need(module, package):
    """Imports a runtime, or says which extra installs it."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f'{package} is not installed ({e}); install the export extra: '
                          f'pip install -e ".[export]"') from None


def read_metadata(path):
    """The core's metadata: `policy.json` beside the file, else (ONNX) the copy in the model."""
    path = pathlib.Path(path)
    beside = path.parent / METADATA
    if beside.exists():
        return json.loads(beside.read_text())
    if path.suffix == '.onnx':
        onnx = need('onnx', 'onnx')
        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False)
                 .metadata_props}
        if 'dreamerv2_tf' in props:
            return json.loads(props['dreamerv2_tf'])
    raise ValueError(f'{path} has no {METADATA} beside it; it is not a dreamerv2_tf export')


class OnnxRunner:
    """The core in an onnxruntime session (CPU)."""

    format = 'onnx'

    def __init__(self, path, threads=None):
        ort = need('onnxruntime', 'onnxruntime')
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options,
                                            providers=['CPUExecutionProvider'])
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __call__(self, inputs):
        return dict(zip(self.outputs, self.session.run(self.outputs, inputs)))


class LiteRTRunner:
    """The core's signature in the LiteRT interpreter (ai-edge-litert). The signature runner
    resizes the inputs when the batch size changes."""

    format = 'tflite'

    def __init__(self, path, signature='core', threads=None):
        interpreter = need('ai_edge_litert.interpreter', 'ai-edge-litert')
        self.interpreter = interpreter.Interpreter(model_path=str(path), num_threads=threads)
        self.runner = self.interpreter.get_signature_runner(signature)

    def __call__(self, inputs):
        return self.runner(**inputs)


RUNNERS = {'onnx': OnnxRunner, 'tflite': LiteRTRunner}


def draw(spec, batch, sample, rng):
    """Noise for one input: a random draw of its distribution, or its mode value."""
    shape = (batch, *spec['shape'][1:])
    if not sample:
        return np.full(shape, spec['mode_value'], np.float32)
    if spec['distribution'].startswith('uniform'):
        return rng.uniform(TINY, 1.0, shape).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


class CorePolicy:
    """A policy core behind the interface of `evaluate`: `initial_state(batch)` and
    `__call__(obs, state, mode) -> (action, state)`, with the noise drawn from `seed`.
    `runner(inputs) -> outputs` runs the core in some runtime."""

    def __init__(self, runner, metadata, seed=None, path=None):
        self.runner = runner
        self.metadata = metadata
        self.path = path
        self.step = metadata['step']
        self.obs_keys = list(metadata['observation_spec'])
        self.layout = metadata['state']['layout']
        self.next_state = metadata['state']['next']
        self.noise = metadata['noise']
        self.rng = np.random.default_rng(metadata['seed'] if seed is None else seed)

    def initial_state(self, batch_size):
        return {k: np.zeros((batch_size, *shape[1:]), np.float32)
                for k, shape in self.layout.items()}

    def noise_inputs(self, batch, mode):
        """The noise inputs for one step in `mode` ('eval' or 'train')."""
        noise = {}
        for key, spec in self.noise.items():
            sample = mode != 'eval' or spec['eval'] == 'sample'
            noise[key] = draw(spec, batch, sample, self.rng)
        return noise

    def __call__(self, obs, state, mode='eval', noise=None):
        batch = len(obs['is_first'])
        inputs = {k: np.asarray(obs[k]) for k in self.obs_keys}
        inputs['is_first'] = np.asarray(obs['is_first'], bool)
        inputs.update({k: np.asarray(v, np.float32) for k, v in state.items()})
        inputs.update(self.noise_inputs(batch, mode) if noise is None else noise)
        outputs = self.runner(inputs)
        state = {k: np.asarray(outputs[v]) for k, v in self.next_state.items()}
        return np.asarray(outputs['action']), state


def detect(path):
    """'onnx' or 'tflite' from a file name, else None."""
    return FORMATS.get(pathlib.Path(path).suffix.lower())


def load(path, seed=None, threads=None):
    """A `CorePolicy` for a `policy.onnx` or `policy.tflite` file."""
    path = pathlib.Path(path)
    kind = detect(path)
    if kind is None:
        raise ValueError(f'{path}: not an .onnx or .tflite file')
    if not path.is_file():
        raise ValueError(f'{path} does not exist')
    metadata = read_metadata(path)
    return CorePolicy(RUNNERS[kind](path, threads=threads), metadata, seed, path)
