"""The acting half of the agent: encoder, RSSM posterior step and actor, with no optimizer or
training head. The agent acts through it, and the exported SavedModel is built from it alone.

    state = policy.initial_state(batch_size)             # (latent dict, previous action)
    outputs, state = policy.step(obs, state, mode, seed)   # pure: randomness only from `seed`
"""

import numpy as np
import tensorflow as tf

from dreamerv2_tf import protocol
from dreamerv2_tf.agent import networks
from dreamerv2_tf.agent.actor_critic import make_actor
from dreamerv2_tf.agent.distributions import sample_categorical, split_seed
from dreamerv2_tf.agent.optimizer import is_mixed

MODES = ('train', 'eval', 'explore')


class Policy:
    """`actors` maps each mode to its actor (`explore` may be an exploration behaviour's);
    `preprocess` turns raw observations into network inputs (the world model's)."""

    def __init__(self, config, obs_space, act_space, dtype, encoder, rssm, actors, preprocess):
        self.config = config
        self.obs_space = dict(obs_space)
        self.act_space = dict(act_space)
        self.dtype = dtype
        self.precision = 16 if is_mixed(dtype) else 32
        self.encoder, self.rssm, self.actors = encoder, rssm, dict(actors)
        self.preprocess = preprocess
        self.act_dim = self.act_space['action'].shape[0]
        self.discrete = self.act_space['action'].discrete

    def initial_state(self, batch_size):
        latent = self.rssm.initial(batch_size)
        return latent, tf.zeros([batch_size, self.act_dim], tf.float32)

    def step(self, obs, state, mode, seed):
        """One policy step for a batch (randomness from `seed`, int [2])."""
        if mode not in MODES:
            raise ValueError(f"policy mode must be one of {', '.join(MODES)}, got '{mode}'")
        latent, action = state
        latent_seed, action_seed, noise_seed = split_seed(seed, 3)
        obs = self.preprocess(obs)
        embed = self.encoder(obs)
        # The original also used the mean state in explore mode (spec 17.11); only eval does here.
        sample = mode != 'eval' or not self.config.eval_state_mean
        latent = self.rssm.obs_step(latent, action, embed, obs['is_first'], latent_seed,
                                    sample)
        feat = self.rssm.get_feat(latent)
        if mode == 'eval':
            action = self.actors['eval'](feat).mode()
            noise = self.config.eval_noise
        else:
            action = self.actors[mode](feat).sample(action_seed)
            noise = self.config.expl_noise
        action = tf.cast(self.action_noise(action, noise, noise_seed), tf.float32)
        return {'action': action}, (latent, action)

    def action_noise(self, action, amount, seed):
        """Discrete: a sample from the mixture of the action with the uniform distribution
        (weight `amount`); continuous: Gaussian noise of std `amount`, clipped to [-1, 1]."""
        if amount == 0:
            return action
        if self.discrete:
            probs = amount / self.act_dim + (1 - amount) * action
            index = sample_categorical(tf.math.log(probs), seed)
            return tf.one_hot(index, self.act_dim, dtype=tf.float32)
        noise = tf.random.stateless_normal(tf.shape(action), seed) * amount
        return tf.clip_by_value(action + noise, -1.0, 1.0)


def float32_copy(policy, preprocess):
    """A float32 policy with `policy`'s weights, built from new encoder, RSSM and task actor
    networks only (exports of a mixed-precision run serve in float32). `preprocess` must cast
    to float32 (`world_model.preprocess_fn(config, tf.float32)`)."""
    config = policy.config
    encoder = networks.Encoder(policy.obs_space, **config.encoder, name='encoder',
                               dtype='float32')
    rssm = networks.RSSM(**config.rssm, name='rssm', dtype='float32')
    source_actor = policy.actors['eval']
    actor = make_actor(config, policy.act_space, source_actor.name, 'float32')
    copy = Policy(config, policy.obs_space, policy.act_space, 'float32', encoder, rssm,
                  {'train': actor, 'eval': actor, 'explore': actor}, preprocess)
    # One eager step creates every variable.
    keys = [k for k in policy.obs_space if protocol.is_model_input(k)]
    obs = {k: np.zeros((1,) + policy.obs_space[k].shape, policy.obs_space[k].dtype) for k in keys}
    copy.step(obs, copy.initial_state(1), 'eval', tf.constant([0, 0], tf.int64))
    for source, target in [(policy.encoder, encoder), (policy.rssm, rssm), (source_actor, actor)]:
        # Paths differ in their prefix (a sublayer built inside a call of its parent carries the
        # parent's name), so variables are matched by their path inside the network.
        sources = _by_inner_path(source)
        targets = _by_inner_path(target)
        # Acting builds only what it reads (no RSSM prior heads), so the copy may hold fewer.
        if not targets or not set(targets) <= set(sources):
            raise ValueError(f'float32_copy: the variables of {source.name} do not match its '
                             f'copy ({sorted(set(targets) - set(sources))[:3]})')
        for path, var in targets.items():
            var.assign(tf.cast(sources[path], var.dtype))
    return copy


def _by_inner_path(network):
    """{variable path without the network's own name prefix: variable}."""
    prefix = network.name + '/'
    return {v.path[len(prefix):] if v.path.startswith(prefix) else v.path: v
            for v in network.variables}
