"""Plays episodes with an exported DreamerV2 policy and prints the returns.

    python export/client.py --model export/models/pong/3000 [--episodes 3]
    python export/client.py --server http://localhost:8501/v1/models/pong [--episodes 3]
    python export/client.py --grpc localhost:8500 --name pong [--episodes 3]

`--model` loads a SavedModel with TensorFlow alone; `--server` calls TF Serving's REST predict API
(`{"signature_name", "inputs"}` -> `{"outputs"}`) with only the standard library and NumPy;
`--grpc` calls TF Serving's gRPC `PredictionService.Predict` (package `tensorflow-serving-api`,
in the export extra) with TensorProto inputs and outputs. The
recurrent state travels through every call: `initial_state` gives it, each `serving_default`
(or `sample`) call returns the next one. The environment comes from `dreamerv2_tf.envs` (the
environment layer only: no TensorFlow, no training code); the task defaults to the model's.
"""

import argparse
import json
import sys
import time
import urllib.error
import urllib.request

import numpy as np


class LocalModel:
    """A SavedModel called in this process (TensorFlow only)."""

    def __init__(self, path):
        import tensorflow as tf
        self.tf = tf
        self.model = tf.saved_model.load(path)

    def call(self, signature, inputs):
        function = self.model.signatures[signature]
        specs = function.structured_input_signature[1]
        tensors = {k: self.tf.constant(v, specs[k].dtype) for k, v in inputs.items()}
        return {k: v.numpy() for k, v in function(**tensors).items()}


class RestModel:
    """A model behind TF Serving's REST API, e.g. http://localhost:8501/v1/models/pong."""

    def __init__(self, url, timeout=30):
        self.url = url.rstrip('/') + ':predict'
        self.timeout = timeout

    def call(self, signature, inputs):
        body = json.dumps({'signature_name': signature,
                           'inputs': {k: np.asarray(v).tolist() for k, v in inputs.items()}})
        request = urllib.request.Request(self.url, body.encode(),
                                         {'Content-Type': 'application/json'})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                reply = json.loads(response.read())
        except urllib.error.HTTPError as e:
            raise RuntimeError(f'{signature} failed: HTTP {e.code}: {e.read().decode()}') from None
        outputs = reply['outputs']
        return {k: np.asarray(v) for k, v in outputs.items()}


class GrpcModel:
    """A model behind TF Serving's gRPC API (PredictionService.Predict), e.g. localhost:8500."""

    def __init__(self, target, name, timeout=30):
        try:
            import grpc
            import tensorflow as tf
            from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
        except ImportError as e:
            raise SystemExit(f'error: --grpc needs tensorflow-serving-api ({e}); install the '
                             f'export extra: pip install -e ".[export]"')
        self.grpc, self.tf, self.predict_pb2 = grpc, tf, predict_pb2
        self.channel = grpc.insecure_channel(target)
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.name = name
        self.timeout = timeout

    def call(self, signature, inputs):
        request = self.predict_pb2.PredictRequest()
        request.model_spec.name = self.name
        request.model_spec.signature_name = signature
        for key, value in inputs.items():
            request.inputs[key].CopyFrom(self.tf.make_tensor_proto(np.asarray(value)))
        try:
            response = self.stub.Predict(request, timeout=self.timeout)
        except self.grpc.RpcError as e:
            raise RuntimeError(f'{signature} failed: {e.code().name}: {e.details()}') from None
        return {k: self.tf.make_ndarray(v) for k, v in response.outputs.items()}


def metadata(model):
    values = model.call('metadata', {})
    decode = lambda v: v.decode() if isinstance(v, bytes) else str(v)  # noqa: E731
    return {k: decode(np.asarray(v).item()) if np.asarray(v).dtype.kind in 'SUO' else
            np.asarray(v).item() for k, v in values.items()}


def make_env(task, config_yaml, seed):
    from ruamel.yaml import YAML
    from dreamerv2_tf import envs
    config = YAML(typ='safe', pure=True).load(config_yaml)
    config.update(task=task, seed=seed, envs=1, envs_parallel='none')
    return envs.make_env(config, 'eval')


def play(model, env, obs_keys, state_keys, signature, seed, actions):
    state = model.call('initial_state', {'batch_size': np.int32(1)})
    obs = env.reset()
    total, length = 0.0, 0
    while True:
        inputs = {k: np.asarray(obs[k])[None] for k in obs_keys}
        inputs.update({k: state[k] for k in state_keys})
        inputs['seed'] = np.array([seed, length], np.int64)
        outputs = model.call(signature, inputs)
        state = {k: outputs[k] for k in state_keys}
        actions.append(outputs['action'][0])
        obs = env.step({'action': outputs['action'][0]})
        total += float(obs['reward'])
        length += 1
        if obs['is_last']:
            return total, length


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--model', help='SavedModel directory (one version)')
    source.add_argument('--server', help='TF Serving REST URL, e.g. '
                                         'http://localhost:8501/v1/models/pong')
    source.add_argument('--grpc', metavar='HOST:PORT',
                        help='TF Serving gRPC address, e.g. localhost:8500 (with --name)')
    parser.add_argument('--name', default='model',
                        help="model name for --grpc (default 'model', TF Serving's default)")
    parser.add_argument('--episodes', type=int, default=1, help='episodes to play (default 1)')
    parser.add_argument('--task', help="task to play (default: the model's)")
    parser.add_argument('--sample', action='store_true',
                        help='sampled actions (signature sample) instead of deterministic ones')
    parser.add_argument('--seed', type=int, default=0, help='environment and sampling seed')
    parser.add_argument('--save-actions', metavar='FILE.npy',
                        help='write every action taken, [steps, A], to this .npy file')
    args = parser.parse_args(argv)

    if args.model:
        model = LocalModel(args.model)
    elif args.server:
        model = RestModel(args.server)
    else:
        model = GrpcModel(args.grpc, args.name)
    try:
        meta = metadata(model)
    except RuntimeError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    obs_keys = list(json.loads(meta['observation_spec']))
    state_keys = list(json.loads(meta['state_spec']))
    task = args.task or meta['task']
    env = make_env(task, meta['config'], args.seed)
    signature = 'sample' if args.sample else 'serving_default'
    print(f"Playing {task} with a policy trained for {meta['step']} steps "
          f"({args.model or args.server or args.grpc}, {signature}).", flush=True)
    returns, actions = [], []
    try:
        for episode in range(args.episodes):
            start = time.perf_counter()
            total, length = play(model, env, obs_keys, state_keys, signature,
                                 args.seed * 1000 + episode, actions)
            returns.append(total)
            print(f'Episode {episode + 1}: return {total:.1f}, {length} steps, '
                  f'{time.perf_counter() - start:.1f} s', flush=True)
    finally:
        env.close()
    print(f'Mean return over {len(returns)} episodes: {np.mean(returns):.2f}')
    if args.save_actions:
        np.save(args.save_actions, np.stack(actions))
    return 0


if __name__ == '__main__':
    sys.exit(main())
