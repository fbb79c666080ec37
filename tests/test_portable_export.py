"""The policy core and its ONNX and LiteRT exports: the core equals the agent's policy step
(mode noise) and its Gumbel-max / reparameterised draws (random noise) against NumPy; 200 steps
of real Atari and DMC episodes give the same actions and states in the SavedModel, onnxruntime
and ai-edge-litert, the last two in processes without TensorFlow; evaluate --policy and bench
--format run the exported files."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import ATARI_RUN_STEPS, command_env, make_batch, make_config, make_spaces
from export_helpers import FORMATS, require_export_extra, shared_export

STEPS = 200
MODE_UNIFORM = np.exp(-1.0)


# The core against the agent's own step ---------------------------------------------------------

CASES = {
    # suite config, flags, spaces
    'atari': ('atari', [], dict(channels=1, actions=6)),
    'dmc': ('dmc_proprio', [], dict(actions=2, discrete=False,
                                    vectors={'position': 3, 'velocity': 2})),
    'continuous_latents': ('dmc_proprio', ['--rssm.discrete', '0', '--actor.dist', 'tanh_normal'],
                           dict(actions=2, discrete=False, vectors={'position': 3})),
}


def one_hot_gumbel(logits, uniform):
    index = np.argmax(logits - np.log(-np.log(uniform)), -1)
    return np.eye(logits.shape[-1], dtype=np.float32)[index]


@pytest.mark.parametrize('case', CASES)
def test_core_is_the_agents_step_with_its_draws_given(case):
    from dreamerv2_tf.agent import Agent
    from dreamerv2_tf.serving.core import PolicyCore
    block, flags, space_args = CASES[case]
    config = make_config(block, flags=flags, eval_state_mean=True)
    obs_space, act_space = make_spaces(**space_args)
    tf.keras.utils.set_random_seed(1)
    agent = Agent(config, obs_space, act_space)
    policy, rssm = agent.acting, agent.acting.rssm
    core = PolicyCore(policy)
    step = tf.function(core)
    discrete_latent, discrete_action = bool(rssm.discrete), act_space['action'].discrete
    batch, rng = 4, np.random.RandomState(0)
    data = make_batch(batch, 8, obs_space, act_space)
    data['is_first'][1, 5] = True  # one row starts a new episode midway
    keys = core.obs_keys
    latent, action = policy.initial_state(batch)
    for t in range(8):
        obs = {k: data[k][:, t] for k in keys + ['is_first']}
        # Reference: the agent's eval step, deterministic with eval_state_mean (no seed is used).
        flat = {'deter': latent['deter'].numpy(),
                'stoch': latent['stoch'].numpy().reshape(batch, -1),
                'prev_action': action.numpy()}
        outputs, (new_latent, new_action) = policy.step(
            obs, (latent, action), 'eval', tf.constant([9, t], tf.int64))
        mode_noise = {k: np.full((batch, spec.shape[1]),
                                 MODE_UNIFORM if 'uniform' in core.noise_description()[k]
                                 ['distribution'] else 0.0, np.float32)
                      for k, spec in core.specs.items() if k.endswith('_noise')}
        out = {k: v.numpy() for k, v in step({**obs, **flat, **mode_noise}).items()}
        np.testing.assert_allclose(out['next_deter'], new_latent['deter'], atol=1e-5)
        np.testing.assert_allclose(out['next_stoch'], new_latent['stoch'].numpy().reshape(
            batch, -1), atol=1e-5)
        if discrete_action:
            np.testing.assert_array_equal(out['action'], outputs['action'])
        else:
            np.testing.assert_allclose(out['action'], outputs['action'], atol=1e-6)

        # Random noise: the latent and action draws equal NumPy's on the agent's distributions.
        noise = {k: (rng.uniform(1e-6, 1, v.shape) if 'uniform' in
                     core.noise_description()[k]['distribution'] else rng.randn(*v.shape))
                 .astype(np.float32) for k, v in mode_noise.items()}
        drawn = {k: v.numpy() for k, v in step({**obs, **flat, **noise}).items()}
        np.testing.assert_allclose(drawn['next_deter'], new_latent['deter'], atol=1e-5)
        if discrete_latent:
            logit = new_latent['logit'].numpy()
            expected = one_hot_gumbel(logit, noise['latent_noise'].reshape(logit.shape))
            np.testing.assert_array_equal(drawn['next_stoch'], expected.reshape(batch, -1))
            stoch = tf.reshape(drawn['next_stoch'], logit.shape)
        else:
            expected = (new_latent['mean'].numpy() +
                        new_latent['std'].numpy() * noise['latent_noise'])
            np.testing.assert_allclose(drawn['next_stoch'], expected, atol=1e-5)
            stoch = tf.constant(drawn['next_stoch'])
        feat = rssm.get_feat({'stoch': stoch, 'deter': new_latent['deter']})
        dist = policy.actors['eval'](feat)
        if discrete_action:
            expected = one_hot_gumbel(dist.logits.numpy(), noise['action_noise'])
            np.testing.assert_array_equal(drawn['action'], expected)
        elif 'action_noise' in noise:  # tanh_normal
            expected = np.tanh(dist.base.loc.numpy() + dist.base.std.numpy() *
                               noise['action_noise'])
            np.testing.assert_allclose(drawn['action'], expected, atol=1e-5)
        else:  # trunc_normal: the core returns the mode
            np.testing.assert_allclose(drawn['action'], dist.mode(), atol=1e-6)
        latent, action = new_latent, new_action


# Parity across runtimes ---------------------------------------------------------------------------

@pytest.fixture(scope='module')
def atari_export(atari_run, tmp_path_factory):
    return shared_export(atari_run, tmp_path_factory)[1]


@pytest.fixture(scope='module')
def dmc_export(tmp_path_factory):
    """A tiny DMC cartpole agent (continuous actions) after a few updates, exported in every
    format."""
    require_export_extra()
    from dreamerv2_tf import envs
    from dreamerv2_tf.agent import Agent
    from dreamerv2_tf.serving.policy_module import export_agent
    config = make_config('dmc_proprio', task='dmc_cartpole_balance', envs=1,
                         envs_parallel='none', jit=True)
    env = envs.make_env(config, 'eval')
    obs_space, act_space = env.obs_space, env.act_space
    env.close()
    tf.keras.utils.set_random_seed(0)
    agent = Agent(config, obs_space, act_space)
    data = make_batch(config.dataset.batch, config.dataset.length, obs_space, act_space)
    state = agent.initial_train_state(config.dataset.batch)
    before = [v.numpy() for v in agent.acting.actors['eval'].variables]
    for _ in range(3):
        state, metrics = agent.train(data, state)
    after = agent.acting.actors['eval'].variables
    assert any(not np.array_equal(a, b.numpy()) for a, b in zip(before, after))  # trained
    out = tmp_path_factory.mktemp('dmc_models')
    return export_agent(agent, config, out, 3, 3, FORMATS)


def make_env(policy_dir):
    from dreamerv2_tf import config as configlib
    from dreamerv2_tf import envs
    meta = json.loads((policy_dir / 'policy.json').read_text())
    config = configlib.Config(configlib.load_yaml(meta['config']))
    return envs.make_env(config.update(envs=1, envs_parallel='none', seed=5), 'eval')


def record_saved_model_episode(version_dir, path):
    """STEPS steps of a real episode with the SavedModel's core signature and sampled noise;
    writes observations, noise, actions and states to `path`."""
    from dreamerv2_tf.serving.load import load_core
    policy = load_core(version_dir, seed=7)
    assert type(policy.runner).__name__ == 'SavedModelCoreRunner'
    env = make_env(version_dir)
    keys = policy.obs_keys + ['is_first']
    record = {k: [] for k in keys + list(policy.noise) + ['action', 'deter', 'stoch']}
    state = policy.initial_state(1)
    obs = env.reset()
    try:
        for _ in range(STEPS):
            batch = {k: np.asarray(obs[k])[None] for k in keys}
            noise = policy.noise_inputs(1, 'train')
            action, state = policy(batch, state, 'train', noise)
            for key, value in {**batch, **noise, 'action': action, 'deter': state['deter'],
                               'stoch': state['stoch']}.items():
                record[key].append(value)
            obs = env.step({'action': action[0]})
            assert not obs['is_last']
    finally:
        env.close()
    np.savez(path, **{k: np.stack(v) for k, v in record.items()})
    return {k: np.stack(v) for k, v in record.items()}


REPLAY = r'''
import sys
import numpy as np
from dreamerv2_tf.serving import portable
policy = portable.load(sys.argv[1])
data = np.load(sys.argv[2], allow_pickle=False)
state = policy.initial_state(1)
result = {'action': [], 'deter': [], 'stoch': []}
for t in range(len(data['is_first'])):
    obs = {k: data[k][t] for k in policy.obs_keys + ['is_first']}
    action, state = policy(obs, state, 'train', {k: data[k][t] for k in policy.noise})
    for key, value in (('action', action), ('deter', state['deter']), ('stoch', state['stoch'])):
        result[key].append(value)
heavy = ('tensorflow', 'tf_keras', 'keras', 'tensorflow_probability', 'tf2onnx', 'onnx',
         'onnxruntime', 'ai_edge_litert', 'jax', 'torch')
loaded = sorted({m.split('.')[0] for m in sys.modules} & set(heavy))
np.savez(sys.argv[3], modules=np.array(loaded), **{k: np.stack(v) for k, v in result.items()})
'''


def replay(policy_file, episode, out):
    result = subprocess.run([sys.executable, '-c', REPLAY, str(policy_file), str(episode),
                             str(out)], capture_output=True, text=True, env=command_env(),
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(np.load(out, allow_pickle=False))


@pytest.mark.parametrize('suite', ['atari', 'dmc'])
def test_runtimes_agree_over_200_steps_of_a_real_episode(suite, request, tmp_path):
    version_dir = request.getfixturevalue(f'{suite}_export')
    expected = record_saved_model_episode(version_dir, tmp_path / 'episode.npz')
    discrete = suite == 'atari'
    if discrete:  # sampled actions: not one action throughout, so the draws matter
        assert len(np.unique(expected['action'].argmax(-1))) > 1
    for kind, runtime in (('onnx', 'onnxruntime'), ('tflite', 'ai_edge_litert')):
        served = replay(version_dir / f'policy.{kind}', tmp_path / 'episode.npz',
                        tmp_path / f'{kind}.npz')
        # The process loaded its runtime and no TensorFlow.
        assert served['modules'].tolist() == [runtime], (kind, served['modules'])
        assert served['action'].shape == expected['action'].shape
        if discrete:
            np.testing.assert_array_equal(served['action'], expected['action'], err_msg=kind)
        else:
            np.testing.assert_allclose(served['action'], expected['action'], atol=1e-5,
                                       rtol=0, err_msg=kind)
        # The recurrent state, carried by each runtime itself, stays the same.
        np.testing.assert_allclose(served['deter'], expected['deter'], atol=1e-4, rtol=0,
                                   err_msg=kind)
        # Discrete latents are one-hot Gumbel-max draws: equal, not only close.
        np.testing.assert_array_equal(served['stoch'], expected['stoch'], err_msg=kind)


# Commands on the exported files ---------------------------------------------------------------

EPISODE = re.compile(r'^Episode 1/1: return (-?[\d.]+), (\d+) steps', re.M)


def test_evaluate_runs_onnx_and_tflite_policies_alike(atari_export, tmp_path, capsys):
    from dreamerv2_tf.evaluate import main
    episodes = {}
    for kind in ('onnx', 'tflite'):
        capsys.readouterr()
        code = main(['--policy', str(atari_export / f'policy.{kind}'), '--episodes', '1',
                     '--seed', '3'])
        out, err = capsys.readouterr()
        assert code == 0, err[-2000:]
        assert f'Evaluating {atari_export}/policy.{kind} (step {ATARI_RUN_STEPS})' in out
        episodes[kind] = EPISODE.search(out).groups()
    # The same noise from the same seed and the same environment: the same episode.
    assert episodes['onnx'] == episodes['tflite']
    # A file of another kind is refused with one line and exit code 2.
    bad = tmp_path / 'policy.pt'
    bad.write_bytes(b'')
    assert main(['--policy', str(bad)]) == 2
    assert capsys.readouterr().err.startswith('error: ')


def test_bench_times_the_core_in_each_runtime(atari_export, capsys):
    from dreamerv2_tf.bench import main
    capsys.readouterr()
    code = main(['policy', '--configs', 'defaults', 'atari', 'tiny', '--batch', '2', '--calls',
                 '3', '--warmup', '1', '--saved-model', str(atari_export), '--format', *FORMATS])
    out, err = capsys.readouterr()
    assert code == 0, (out + err)[-3000:]
    lines = re.findall(r'^(\w+) core \((\w+)\), batch 2: median ([\d.]+) ms over 3 calls$', out,
                       re.M)
    assert [(k, r) for k, r, _ in lines] == [
        ('savedmodel', 'SavedModelCoreRunner'), ('onnx', 'OnnxRunner'),
        ('tflite', 'LiteRTRunner')], out[-2000:]
    assert all(float(m) > 0 for _, _, m in lines)
    assert re.search(r'^SavedModel serving_default, batch 2: median', out, re.M)
