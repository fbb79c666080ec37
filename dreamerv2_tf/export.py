"""Exports the policy (encoder, RSSM posterior step, actor) as a SavedModel for TF Serving.

    python -m dreamerv2_tf.export --logdir runs/pong --out export/models/pong [--version N]

Writes `<out>/<version>/` (TF Serving's layout; version defaults to the checkpoint's step and is
never overwritten). Signatures, all with a free batch dimension B:

  initial_state(batch_size int32 [])          -> the zero state tensors
  serving_default(<obs keys>, is_first, <state>, seed) -> action, [action_index], <new state>
                                                 deterministic (eval) actions
  sample(<same inputs>)                       -> the same outputs with sampled (train) actions
  metadata()                                  -> config, step, task, spaces and specs as strings

Observation inputs are the keys the encoder reads (e.g. `image` uint8 [B, 64, 64, C]); state
inputs and outputs are float32: `deter`, `stoch`, `logit` (or `mean`, `std`) and `prev_action`.
`seed` is int64 [2]: it drives the sampled parts (the latent state unless `eval_state_mean`, and
the action in `sample`), so the same inputs and seed give the same outputs, e.g. [run, step].
The exported graph computes in float32 unless `--precision 16`. Loading needs TensorFlow only.
"""

import argparse
import json
import pathlib
import shutil
import sys

import tensorflow as tf

STATE_ACTION = 'prev_action'
EXTRA_DIR = 'assets.extra'  # TF Serving's place for files beside a SavedModel


def obs_specs(agent):
    encoder = agent.wm.encoder
    specs = {}
    for key in encoder.cnn_keys + encoder.mlp_keys:
        space = agent.obs_space[key]
        specs[key] = tf.TensorSpec([None, *space.shape], tf.as_dtype(space.dtype), name=key)
    specs['is_first'] = tf.TensorSpec([None], tf.bool, name='is_first')
    return specs


def state_specs(agent):
    latent, action = agent.initial_policy_state(1)
    specs = {k: tf.TensorSpec([None, *v.shape[1:]], tf.float32, name=k) for k, v in latent.items()}
    specs[STATE_ACTION] = tf.TensorSpec([None, *action.shape[1:]], tf.float32, name=STATE_ACTION)
    return specs


def describe(spec):
    return {'dtype': spec.dtype.name, 'shape': [None if d is None else int(d) for d in spec.shape]}


class PolicyModule:
    """Builds the exported `tf.Module`: signature functions that close over the agent's networks.

    The module holds only the captured variables and the functions, no Keras or Python objects,
    so loading needs TensorFlow alone. It lists the raw variables explicitly so that TF1-style
    loaders (TF Serving, `saved_model_cli run`) can restore them."""

    def __init__(self, agent, config, step):

        self.agent = agent
        self.discrete = agent.act_space['action'].discrete
        self.obs = obs_specs(agent)
        self.state = state_specs(agent)
        seed = tf.TensorSpec([2], tf.int64, name='seed')
        inputs = {**self.obs, **self.state, 'seed': seed}
        metadata = self.metadata(config, step)
        self.metadata_values = metadata

        module = tf.Module()
        module.serving_default = tf.function(lambda x: self._step(x, 'eval'),
                                             input_signature=[inputs])
        module.sample = tf.function(lambda x: self._step(x, 'train'), input_signature=[inputs])
        module.initial_state = tf.function(
            self._initial_state, input_signature=[tf.TensorSpec([], tf.int32, name='batch_size')])
        constants = {k: tf.constant(v, tf.int64 if isinstance(v, int) else None)
                     for k, v in metadata.items()}
        module.metadata = tf.function(lambda: dict(constants), input_signature=[])
        self.signatures = {
            'serving_default': module.serving_default.get_concrete_function(),
            'sample': module.sample.get_concrete_function(),
            'initial_state': module.initial_state.get_concrete_function(),
            'metadata': module.metadata.get_concrete_function(),
        }
        variables = {id(v): v for fn in self.signatures.values() for v in fn.variables}
        module.captured_tf_variables = list(variables.values())
        self.module = module

    def _check(self, inputs):
        """In-graph shape checks, so that every caller (TF Serving and `saved_model_cli`
        included, which do not check shapes against the signature) gets an error naming the
        input: each input's shape, and one batch size for all."""
        specs = {**self.obs, **self.state}
        batch = tf.shape(inputs['is_first'])[0]
        checks = []
        for key, spec in specs.items():
            shape = tf.shape(inputs[key])
            expected = 'B' + ''.join(f', {d}' for d in spec.shape[1:])
            checks.append(tf.debugging.assert_equal(
                tf.size(shape), len(spec.shape),
                message=f"input '{key}' must have shape [{expected}]"))
            if spec.shape.rank > 1:
                checks.append(tf.debugging.assert_equal(
                    shape[1:], tf.constant(spec.shape[1:].as_list(), tf.int32),
                    message=f"input '{key}' must have shape [{expected}]"))
            checks.append(tf.debugging.assert_equal(
                shape[0], batch, message=f"input '{key}' has another batch size than 'is_first'"))
        with tf.control_dependencies(checks):
            return {k: tf.identity(v) for k, v in inputs.items()}

    def _step(self, inputs, mode):
        inputs = self._check(inputs)
        dtype = self.agent.wm.rssm.compute_dtype
        obs = {k: inputs[k] for k in self.obs}
        latent = {k: tf.cast(inputs[k], dtype) for k in self.state if k != STATE_ACTION}
        outputs, (latent, action) = self.agent.policy_step(
            obs, (latent, inputs[STATE_ACTION]), mode, inputs['seed'])
        result = {'action': tf.cast(outputs['action'], tf.float32)}
        if self.discrete:
            result['action_index'] = tf.argmax(result['action'], -1)
        result.update({k: tf.cast(v, tf.float32) for k, v in latent.items()})
        result[STATE_ACTION] = tf.cast(action, tf.float32)
        return result

    def _initial_state(self, batch_size):
        latent, action = self.agent.initial_policy_state(batch_size)
        state = {k: tf.cast(v, tf.float32) for k, v in latent.items()}
        state[STATE_ACTION] = action
        return state

    def metadata(self, config, step):
        from dreamerv2_tf import config as configlib
        space = self.agent.act_space['action']
        action = {'discrete': space.discrete, 'shape': list(space.shape),
                  'dtype': space.dtype.name, 'low': space.low.tolist(),
                  'high': space.high.tolist()}
        return {
            'config': configlib.dump_yaml(config.to_dict()),
            'step': int(step),
            'task': config.task,
            'precision': int(config.precision),
            'action_space': json.dumps(action),
            'observation_spec': json.dumps({k: describe(v) for k, v in self.obs.items()}),
            'state_spec': json.dumps({k: describe(v) for k, v in self.state.items()}),
        }

    def save(self, directory):
        directory = pathlib.Path(directory)
        tf.saved_model.save(self.module, str(directory), signatures=self.signatures)
        extra = directory / EXTRA_DIR
        extra.mkdir(exist_ok=True)
        (extra / 'metadata.json').write_text(json.dumps(self.metadata_values, indent=2))


def save_version(module, out, version):
    """Writes `<out>/<version>` through a temporary folder (TF Serving polls `out` and must
    never see a half-written version). Refuses to overwrite an existing version."""
    out = pathlib.Path(out)
    final = out / str(int(version))
    if final.exists():
        raise FileExistsError(f'{final} exists; versions are never overwritten (use --version)')
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f'.tmp-{int(version)}'  # not a number: TF Serving ignores it
    if tmp.exists():
        shutil.rmtree(tmp)
    module.save(tmp)
    tmp.rename(final)
    return final


def export_agent(agent, config, out, version, step):
    return save_version(PolicyModule(agent, config, step), out, version)


def export_config(config, precision):
    """The config an exported graph is built with: float32 unless asked for float16."""
    return config.update(precision=precision, jit=True)


def export_from_training(agent, config, logdir, step):
    """Called by the training loop every `export_every` steps: writes <logdir>/export/<step>
    in float32 from a copy of the agent's weights."""
    from dreamerv2_tf.agent import Agent
    target = agent
    if config.precision != 32:
        target = Agent(export_config(config, 32), agent.obs_space, agent.act_space)
        copy_weights(agent, target)
    path = export_agent(target, config, pathlib.Path(logdir) / 'export', step, step)
    print(f'Exported the policy to {path}.', flush=True)
    return path


def copy_weights(source, target):
    sources = {v.path: v for net in source.networks for v in net.variables}
    for net in target.networks:
        for var in net.variables:
            var.assign(sources[var.path])
    target.step.assign(source.step)


def restore_networks(agent, checkpoint_dir):
    """Restores network variables and the step from the latest checkpoint (optimizer state is
    not needed, so a float32 agent can read a mixed-precision run's checkpoint)."""
    from dreamerv2_tf.checkpoint import agent_trackables
    latest = tf.train.latest_checkpoint(str(checkpoint_dir))
    if latest is None:
        raise ValueError(f'no checkpoint in {checkpoint_dir}; train first')
    items = agent_trackables(agent)
    checkpoint = tf.train.Checkpoint(variables=items['variables'], state=items['state'])
    checkpoint.restore(latest).expect_partial().assert_existing_objects_matched()
    return latest


# Loading -----------------------------------------------------------------------------------------

def find_saved_model(path):
    """`path` if it is a SavedModel, its newest numeric version folder if it holds versions,
    else None."""
    path = pathlib.Path(path)
    if (path / 'saved_model.pb').exists():
        return path
    versions = [p for p in path.glob('*') if p.name.isdigit() and (p / 'saved_model.pb').exists()]
    return max(versions, key=lambda p: int(p.name)) if versions else None


class SavedModelPolicy:
    """An exported policy behind the interface of `evaluate`: initial_state / __call__."""

    def __init__(self, path):
        from dreamerv2_tf import config as configlib
        self.path = path
        self.model = tf.saved_model.load(str(path))
        meta = {k: v.numpy() for k, v in self.model.signatures['metadata']().items()}
        self.config = configlib.Config(configlib.load_yaml(meta['config'].decode()))
        self.step = int(meta['step'])
        self.obs_keys = list(json.loads(meta['observation_spec'].decode()))
        self.counter = 0

    def initial_state(self, batch_size):
        return self.model.signatures['initial_state'](batch_size=tf.constant(batch_size))

    def __call__(self, obs, state, mode):
        signature = self.model.signatures['serving_default' if mode == 'eval' else 'sample']
        self.counter += 1
        seed = tf.constant([self.config.seed, self.counter], tf.int64)
        inputs = {k: tf.convert_to_tensor(obs[k]) for k in self.obs_keys}
        out = signature(**inputs, **state, seed=seed)
        return out['action'].numpy(), {k: out[k] for k in state}


# Command line ------------------------------------------------------------------------------------

def parse(argv):
    parser = argparse.ArgumentParser(
        prog='python -m dreamerv2_tf.export', description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split('\n\n', 1)[1])
    parser.add_argument('--logdir', required=True, help='training logdir with checkpoints')
    parser.add_argument('--out', help='model folder holding versions (default <logdir>/export)')
    parser.add_argument('--version', type=int, help="version number (default: the checkpoint's "
                        'agent step)')
    parser.add_argument('--precision', type=int, choices=(32, 16), default=32,
                        help='compute precision of the exported graph (default 32; 16 keeps '
                             'mixed float16 for GPU serving)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    logdir = pathlib.Path(args.logdir).expanduser()
    try:
        from dreamerv2_tf.evaluate import load_config
        config = load_config(logdir)
    except ValueError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    from dreamerv2_tf import envs
    from dreamerv2_tf.agent import Agent

    config = export_config(config, args.precision)
    env = envs.make_env(config, 'eval')
    obs_space, act_space = env.obs_space, env.act_space
    env.close()
    agent = Agent(config, obs_space, act_space)
    try:
        checkpoint = restore_networks(agent, logdir / 'checkpoints')
    except ValueError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    step = int(agent.step.numpy())
    version = args.version if args.version is not None else step
    out = pathlib.Path(args.out).expanduser() if args.out else logdir / 'export'
    print(f'Exporting {checkpoint} (step {step}) in float{args.precision}...', flush=True)
    try:
        path = export_agent(agent, config, out, version, step)
    except FileExistsError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(f'Wrote {path}. Signatures: serving_default, sample, initial_state, metadata.')
    return 0


if __name__ == '__main__':
    sys.exit(main())
