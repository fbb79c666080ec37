"""Loading a trained policy: from a training logdir's latest checkpoint, or from an exported
SavedModel (which needs TensorFlow only). Both present `initial_state(batch)` and
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
