"""The exported SavedModel: round trip in a TensorFlow-only process, saved_model_cli, seeded
sampling, input errors, the REST client and evaluate on a SavedModel."""

import json
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import ATARI_RUN_STEPS, command_env, run_module
from export_helpers import shared_export
from tf_serving_stub import TFServingStub

CLIENT = pathlib.Path(__file__).resolve().parent.parent / 'export' / 'client.py'


@pytest.fixture(scope='module')
def exported(atari_run, tmp_path_factory):
    out, version = shared_export(atari_run, tmp_path_factory)
    return atari_run[0], out, version


def restored_agent(logdir):
    from dreamerv2_tf.agent import Agent
    from dreamerv2_tf.envs import make_env
    from dreamerv2_tf.serving.load import load_config
    from dreamerv2_tf.serving.load import restore_networks
    config = load_config(logdir).update(precision=32)
    env = make_env(config, 'eval')
    agent = Agent(config, env.obs_space, env.act_space)
    restore_networks(agent, logdir / 'checkpoints')
    return agent, env


FRESH_PROCESS = r'''
import sys
import numpy as np
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
data = np.load(sys.argv[2], allow_pickle=False)
policy = model.signatures['serving_default']
state = model.signatures['initial_state'](batch_size=tf.constant(1))
actions = []
for image, first, seed in zip(data['image'], data['is_first'], data['seed']):
    out = policy(image=tf.constant(image[None]), is_first=tf.constant([first]),
                 seed=tf.constant(seed), **state)
    state = {k: out[k] for k in state}
    actions.append(out['action'].numpy()[0])
loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('dreamerv2_tf', 'tensorflow_probability'))
assert not loaded, loaded
np.save(sys.argv[3], np.stack(actions))
'''


def test_actions_in_a_tensorflow_only_process_equal_the_agents_eval_policy(exported, tmp_path):
    logdir, _, model_dir = exported
    agent, env = restored_agent(logdir)
    state = agent.initial_policy_state(1)
    obs = env.reset()
    record = {'image': [], 'is_first': [], 'seed': [], 'action': []}
    for step in range(100):
        seed = np.array([11, step], np.int64)
        batch = {k: np.asarray(v)[None] for k, v in obs.items()}
        outputs, state = agent.policy_step(batch, state, 'eval', tf.constant(seed))
        for key, value in (('image', obs['image']), ('is_first', obs['is_first']),
                           ('seed', seed), ('action', outputs['action'].numpy()[0])):
            record[key].append(value)
        obs = env.step({'action': outputs['action'].numpy()[0]})
        assert not obs['is_last']
    env.close()
    np.savez(tmp_path / 'episode.npz', **{k: np.stack(v) for k, v in record.items()})
    result = subprocess.run(
        [sys.executable, '-c', FRESH_PROCESS, str(model_dir), str(tmp_path / 'episode.npz'),
         str(tmp_path / 'actions.npy')], capture_output=True, text=True, env=command_env(),
        timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    served = np.load(tmp_path / 'actions.npy', allow_pickle=False)
    expected = np.stack(record['action'])
    assert served.shape == (100, 6)
    np.testing.assert_array_equal(served, expected)


def test_saved_model_cli_show_and_run(exported, tmp_path):
    logdir, _, model_dir = exported
    shown = subprocess.run(['saved_model_cli', 'show', '--dir', str(model_dir), '--all'],
                           capture_output=True, text=True, env=command_env(), timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    text = shown.stdout

    def signature(name):
        match = re.search(rf"signature_def\['{name}'\]:(.*?)Method name", text, re.S)
        assert match, name
        block = match.group(1)
        return {m.group(1): (m.group(2), m.group(3)) for m in re.finditer(
            r"\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+shape: (\([^)]*\))", block)}

    serving = signature('serving_default')
    assert serving['image'] == ('DT_UINT8', '(-1, 64, 64, 1)')
    assert serving['is_first'] == ('DT_BOOL', '(-1)')
    assert serving['seed'] == ('DT_INT64', '(2)')
    assert serving['deter'] == ('DT_FLOAT', '(-1, 32)')
    assert serving['stoch'] == serving['logit'] == ('DT_FLOAT', '(-1, 4, 4)')
    assert serving['prev_action'] == ('DT_FLOAT', '(-1, 6)')
    assert serving['action_index'] == ('DT_INT64', '(-1)')
    assert signature('sample') == serving
    assert signature('initial_state')['batch_size'] == ('DT_INT32', '()')
    assert {'config', 'step', 'task', 'action_space', 'observation_spec'} <= set(
        signature('metadata'))
    # The portable core: flat state (4 latents x 4 classes), noise for the latent and action.
    assert signature('core') == {
        'image': ('DT_UINT8', '(-1, 64, 64, 1)'), 'is_first': ('DT_BOOL', '(-1)'),
        'deter': ('DT_FLOAT', '(-1, 32)'), 'stoch': ('DT_FLOAT', '(-1, 16)'),
        'prev_action': ('DT_FLOAT', '(-1, 6)'), 'latent_noise': ('DT_FLOAT', '(-1, 16)'),
        'action_noise': ('DT_FLOAT', '(-1, 6)'), 'action': ('DT_FLOAT', '(-1, 6)'),
        'next_deter': ('DT_FLOAT', '(-1, 32)'), 'next_stoch': ('DT_FLOAT', '(-1, 16)')}
    inputs = {'image': np.zeros((1, 64, 64, 1), np.uint8), 'is_first': np.array([True]),
              'seed': np.zeros(2, np.int64), 'deter': np.zeros((1, 32), np.float32),
              'stoch': np.zeros((1, 4, 4), np.float32), 'logit': np.zeros((1, 4, 4), np.float32),
              'prev_action': np.zeros((1, 6), np.float32)}
    for key, value in inputs.items():
        np.save(tmp_path / f'{key}.npy', value)
    run = subprocess.run(
        ['saved_model_cli', 'run', '--dir', str(model_dir), '--tag_set', 'serve',
         '--signature_def', 'serving_default', '--inputs',
         ';'.join(f'{k}={tmp_path / k}.npy' for k in inputs)],
        capture_output=True, text=True, env=command_env(), timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    match = re.search(r'Result for output key action_index:\s*\[(\d)\]', run.stdout)
    assert match, run.stdout[-2000:]
    index = int(match.group(1))
    shown_action = re.search(r'Result for output key action:\s*\[\[([^\]]*)\]\]', run.stdout)
    assert shown_action, run.stdout[-2000:]
    action = np.array(shown_action.group(1).split(), float)
    # The index is the argmax of the returned one-hot action ...
    assert action.shape == (6,) and action.sum() == 1 and set(action) <= {0.0, 1.0}
    assert index == int(action.argmax())
    # ... and the in-process agent's eval policy takes the same action on the same zero inputs,
    # zero state and seed.
    agent, env = restored_agent(logdir)
    env.close()
    obs = {'image': inputs['image'], 'is_first': inputs['is_first'],
           'reward': np.zeros(1, np.float32), 'is_last': np.array([False]),
           'is_terminal': np.array([False])}
    state = ({'deter': tf.zeros((1, 32)), 'stoch': tf.zeros((1, 4, 4)),
              'logit': tf.zeros((1, 4, 4))}, tf.zeros((1, 6)))
    expected, _ = agent.policy_step(obs, state, 'eval', tf.constant([0, 0], tf.int64))
    np.testing.assert_array_equal(expected['action'].numpy()[0], action)
    # A wrong image size is refused by the session loader, naming the input's tensor.
    np.save(tmp_path / 'image.npy', np.zeros((1, 32, 32, 1), np.uint8))
    bad = subprocess.run(run.args, capture_output=True, text=True, env=command_env(), timeout=300)
    assert bad.returncode != 0
    assert ('Cannot feed value of shape (1, 32, 32, 1) for Tensor serving_default_image:0, which '
            'has shape (None, 64, 64, 1)') in bad.stderr


def policy_inputs(model, batch, seed):
    state = model.signatures['initial_state'](batch_size=tf.constant(batch))
    images = np.random.RandomState(0).randint(0, 256, (batch, 64, 64, 1)).astype(np.uint8)
    return dict(image=tf.constant(images), is_first=tf.ones([batch], tf.bool),
                seed=tf.constant(seed, tf.int64), **state)


def test_sampled_actions_with_the_same_seed_are_identical_across_loads(exported):
    _, _, model_dir = exported
    first, second = tf.saved_model.load(str(model_dir)), tf.saved_model.load(str(model_dir))
    a = first.signatures['sample'](**policy_inputs(first, 64, [3, 4]))
    b = second.signatures['sample'](**policy_inputs(second, 64, [3, 4]))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    c = second.signatures['sample'](**policy_inputs(second, 64, [3, 5]))
    assert not np.array_equal(a['action'], c['action'])  # the seed matters
    # Sampled actions are valid one-hot actions whose index is reported too.
    np.testing.assert_array_equal(a['action'].numpy().sum(-1), 1)
    np.testing.assert_array_equal(a['action'].numpy().argmax(-1), a['action_index'])


def test_bad_inputs_are_rejected_with_the_input_named(exported):
    _, _, model_dir = exported
    model = tf.saved_model.load(str(model_dir))
    good = policy_inputs(model, 2, [1, 2])
    signature = model.signatures['serving_default']
    assert signature(**good)['action'].shape == (2, 6)
    # Wrong image size: TensorFlow's binder or the graph's own check (which TF1-style loaders
    # such as TF Serving reach, see the saved_model_cli test) names the input and its shape.
    with pytest.raises((TypeError, tf.errors.InvalidArgumentError),
                       match=r"(?s)\\?'image\\?'.*64, 64, 1"):
        signature(**dict(good, image=tf.zeros([2, 32, 32, 1], tf.uint8)))
    # A missing state tensor.
    with pytest.raises(TypeError, match="missing a required argument: 'deter'"):
        signature(**{k: v for k, v in good.items() if k != 'deter'})
    # Wrong dtype: the saved function names the input and the expected spec; the signature
    # wrapper rejects it too, before running anything (TensorFlow names it by position there).
    with pytest.raises(TypeError, match=r"dtype=tf.float32, name='image'\) to "
                                        r"TensorSpec\(shape=\(None, 64, 64, 1\), dtype=tf.uint8"):
        model.serving_default(dict(good, image=tf.zeros([2, 64, 64, 1], tf.float32)))
    with pytest.raises(tf.errors.InvalidArgumentError, match='expected to be a uint8 tensor'):
        signature(**dict(good, image=tf.zeros([2, 64, 64, 1], tf.float32)))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"input \\?'deter\\?' has another batch size"):
        signature(**dict(good, deter=tf.zeros([3, 32])))


def play(args, actions_file):
    result = subprocess.run([sys.executable, str(CLIENT), *args, '--episodes', '1',
                             '--save-actions', str(actions_file)],
                            capture_output=True, text=True, env=command_env(), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    match = re.search(r'Episode 1: return (-?[\d.]+), (\d+) steps', result.stdout)
    assert match, result.stdout
    actions = np.load(actions_file, allow_pickle=False)
    assert actions.shape == (int(match.group(2)), 6)
    return float(match.group(1)), int(match.group(2)), actions


@pytest.fixture(scope='module')
def local_episode(exported, tmp_path_factory):
    """One full Pong episode of the client with the SavedModel in its own process."""
    _, _, model_dir = exported
    return play(['--model', str(model_dir)], tmp_path_factory.mktemp('local') / 'actions.npy')


def test_client_plays_through_the_rest_protocol_like_the_local_model(exported, local_episode,
                                                                     tmp_path):
    _, out, model_dir = exported
    stub = TFServingStub(model_dir, name='pong', version=ATARI_RUN_STEPS)
    try:
        remote = play(['--server', stub.url], tmp_path / 'actions.npy')
        requests = stub.requests
        # The same protocol rejects bad requests with HTTP 400 and a named input.
        import urllib.error
        import urllib.request
        inputs = {k: v.numpy().tolist() for k, v in policy_inputs(stub.model, 1, [0, 0]).items()}
        inputs['image'] = np.full((1, 64, 64, 1), 0.5).tolist()  # floats for a uint8 input
        body = json.dumps({'signature_name': 'serving_default', 'inputs': inputs}).encode()
        request = urllib.request.Request(stub.url + ':predict', body,
                                         {'Content-Type': 'application/json'})
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(request, timeout=30)
        assert error.value.code == 400 and "input 'image'" in error.value.read().decode()
    finally:
        stub.close()
    # Every step went through the server: initial state, metadata, one call per step.
    assert requests == remote[1] + 2
    # Deterministic actions with the same seeds and env seed: the same episode both ways.
    assert remote[:2] == local_episode[:2]
    np.testing.assert_array_equal(remote[2], local_episode[2])


def test_client_plays_through_grpc_like_the_local_model(exported, local_episode, tmp_path):
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
    from grpc_serving_stub import GrpcServingStub
    _, _, model_dir = exported
    stub = GrpcServingStub(model_dir, name='pong', version=ATARI_RUN_STEPS)
    try:
        remote = play(['--grpc', stub.target, '--name', 'pong'], tmp_path / 'actions.npy')
        requests = stub.requests
        channel = grpc.insecure_channel(stub.target)
        service = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        def predict(**changes):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = 'pong'
            request.model_spec.signature_name = 'serving_default'
            inputs = {k: v.numpy() for k, v in policy_inputs(stub.service.model, 1, [0, 0]).items()}
            for key, value in {**inputs, **changes}.items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            return service.Predict(request, timeout=30)

        # A good request answers with the state; bad ones get INVALID_ARGUMENT naming the input.
        assert tf.make_ndarray(predict().outputs['deter']).shape == (1, 32)
        bad_inputs = {
            'image': ({'image': np.full((1, 64, 64, 1), 0.5, np.float32)},
                      "input 'image': expected uint8, got float32"),
            'shape': ({'image': np.zeros((1, 32, 32, 1), np.uint8)}, 'image'),
            'batch': ({'deter': np.zeros((3, 32), np.float32)},
                      "input 'deter' has another batch size"),
        }
        for name, (changes, message) in bad_inputs.items():
            with pytest.raises(grpc.RpcError) as error:
                predict(**changes)
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
            assert message in error.value.details(), (name, error.value.details())
        channel.close()
    finally:
        stub.close()
    # One Predict per step (plus initial_state and metadata), the same actions as locally.
    assert requests == remote[1] + 2
    assert remote[:2] == local_episode[:2]
    np.testing.assert_array_equal(remote[2], local_episode[2])


def test_evaluate_accepts_a_saved_model_and_versions_are_never_overwritten(exported):
    logdir, out, _ = exported
    code, output, _ = run_module('dreamerv2_tf.evaluate', ['--logdir', str(out), '--episodes',
                                                           '1'])
    assert code == 0, output[-2000:]
    evaluating = rf'Evaluating \S+/pong/{ATARI_RUN_STEPS} \(step {ATARI_RUN_STEPS}\)'
    assert re.search(evaluating, output), output[-2000:]
    assert re.search(r'Return over 1 episodes: mean -?\d', output)
    code, output, _ = run_module('dreamerv2_tf.export', ['--logdir', str(logdir), '--out',
                                                         str(out)])
    assert code == 2 and 'versions are never overwritten' in output
