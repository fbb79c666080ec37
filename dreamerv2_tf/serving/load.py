"""Loading a trained policy: from a training logdir's latest checkpoint, from an exported
SavedModel (which needs TensorFlow only), or from an exported ONNX or TFLite policy core (which
needs only its runtime, see `serving/portable.py`). All present `initial_state(batch)` and
`__call__(obs, state, mode) -> (action, state)`."""

import json
import pathlib

import tensorflow as tf


def restore_networks(agent, checkpoint_dir):
    """Restores network variables and the step from the latest checkpoint (optimizer state is
    not needed, so a float32 agent can read a mixed-precision run's checkpoint)."""
    from dreamerv2_tf.run.checkpoint import agent_trackables
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


class SavedModelCoreRunner:
    """The SavedModel's `core` signature as a `portable.CorePolicy` runner (NumPy in and out),
    the TensorFlow twin of the ONNX and LiteRT runners."""

    format = 'savedmodel'

    def __init__(self, path):
        self.model = tf.saved_model.load(str(path))
        self.function = self.model.signatures['core']
        self.specs = self.function.structured_input_signature[1]

    def __call__(self, inputs):
        tensors = {k: tf.constant(v, self.specs[k].dtype) for k, v in inputs.items()}
        return {k: v.numpy() for k, v in self.function(**tensors).items()}


def load_core(path, seed=None):
    """A `portable.CorePolicy` for a SavedModel (its `core` signature), `policy.onnx` or
    `policy.tflite`."""
    from dreamerv2_tf.serving import portable
    from dreamerv2_tf.serving.policy_module import CORE_METADATA, EXTRA_DIR
    if portable.detect(path):
        return portable.load(path, seed)
    saved_model = find_saved_model(path)
    if saved_model is None:
        raise ValueError(f'{path} is neither a SavedModel nor an .onnx or .tflite file')
    metadata = saved_model / EXTRA_DIR / CORE_METADATA
    if not metadata.exists():
        raise ValueError(f'{saved_model} has no policy core (a float16 export?)')
    return portable.CorePolicy(SavedModelCoreRunner(saved_model),
                               json.loads(metadata.read_text()), seed, saved_model)


class CheckpointPolicy:
    """The agent of a training logdir, restored from its latest checkpoint."""

    def __init__(self, logdir, config, obs_space, act_space):
        from dreamerv2_tf.agent import Agent

        self.agent = Agent(config, obs_space, act_space)
        self.path = restore_networks(self.agent, logdir / 'checkpoints')
        self.step = int(self.agent.step.numpy())

    def initial_state(self, batch_size):
        return self.agent.initial_policy_state(batch_size)

    def __call__(self, obs, state, mode):
        outputs, state = self.agent.policy(obs, state, mode)
        return outputs['action'].numpy(), state


def load_config(logdir):
    """The resolved config a training logdir was run with."""
    from dreamerv2_tf import config as configlib
    path = pathlib.Path(logdir) / 'config.yaml'
    if not path.exists():
        raise ValueError(f'{logdir} has no config.yaml; is it a training logdir?')
    return configlib.Config.load(path)
