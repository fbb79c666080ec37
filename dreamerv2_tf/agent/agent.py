"""The DreamerV2 agent (spec 9.8): world model, task actor-critic and an exploration behaviour
behind three compiled functions.

    state = agent.initial_policy_state(batch_size)
    outputs, state = agent.policy(obs, state, mode)      # mode: 'train', 'eval' or 'explore'
    train_state = agent.initial_train_state(batch_size)
    train_state, metrics = agent.train(batch, train_state)
    videos = agent.report(batch)

State is passed explicitly (a pure carry), which maps one-to-one onto the exported SavedModel.
All randomness comes from one `tf.random.Generator` (`agent.rng`, seeded by `config.seed`) that is
checkpointed with the weights.
"""

import numpy as np
import tensorflow as tf

from dreamerv2_tf.agent import distributions as dists
from dreamerv2_tf.agent import exploration
from dreamerv2_tf.agent.actor_critic import ActorCritic
from dreamerv2_tf.agent.world_model import WorldModel, split_seed

MODES = ('train', 'eval', 'explore')


def dtype_policy(precision):
    return {16: 'mixed_float16', 32: 'float32'}[precision]


class Agent:

    def __init__(self, config, obs_space, act_space):
        self.config = config
        self.obs_space = dict(obs_space)
        self.act_space = dict(act_space)
        self.dtype = dtype_policy(config.precision)
        self.act_dim = act_space['action'].shape[0]
        # What the networks may read: `log_` keys are logged, never fed to the model, and keys
        # outside the train env's space (an eval env's video frames) are not inputs either.
        self.input_keys = tuple(k for k in self.obs_space if not k.startswith('log_'))
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name='step')
        self.rng = tf.random.Generator.from_seed(config.seed)
        self.wm = WorldModel(config, self.obs_space, self.act_space, self.dtype)
        self.task_behavior = ActorCritic(config, self.act_space, self.step, self.dtype)
        if config.expl_behavior == 'greedy':
            self.expl_behavior = self.task_behavior
        else:
            self.expl_behavior = exploration.make(config, self.act_space, self.wm, self.step,
                                                  self.dtype)
        self._build()
        self._compile(config.jit)

    def _build(self):
        """Creates every variable eagerly, before any function is traced."""
        seed = tf.constant([0, 0], tf.int64)
        data = {k: np.zeros((1, 2) + s.shape, s.dtype) for k, s in self.obs_space.items()
                if not k.startswith('log_')}
        data['action'] = np.zeros((1, 2, self.act_dim), np.float32)
        feat = self.wm.build(data, seed)
        self.task_behavior.build(feat)
        if self.expl_behavior is not self.task_behavior:
            self.expl_behavior.build(feat, data, seed)

    def _compile(self, jit):
        if jit is False:  # eager, for debugging
            self._policy_fn, self._train_fn, self._report_fn = (
                self._policy, self._train, self._report)
            return
        # No AutoGraph: tensor-dependent control flow is explicit (tf.scan, tf.cond) and every
        # Python branch or loop is over static values, so converting the source only costs time
        # (about half of each trace).
        xla = jit == 'xla'
        self._policy_fn = tf.function(self._policy, jit_compile=xla, autograph=False)
        self._train_fn = tf.function(self._train, jit_compile=xla, autograph=False)
        self._report_fn = tf.function(self._report, autograph=False)

    # Networks and state --------------------------------------------------------------------------

    @property
    def networks(self):
        nets = self.wm.networks + self.task_behavior.networks
        if self.expl_behavior is not self.task_behavior:
            nets += self.expl_behavior.networks
        return nets

    @property
    def optimizers(self):
        opts = [self.wm.opt, self.task_behavior.actor_opt, self.task_behavior.critic_opt]
        if self.expl_behavior is not self.task_behavior:
            opts += self.expl_behavior.optimizers
        return opts

    @property
    def state_variables(self):
        """Variables outside networks and optimizers (counters, normalisers)."""
        result = [self.step] + self.task_behavior.state_variables
        if self.expl_behavior is not self.task_behavior:
            result += self.expl_behavior.state_variables
        return result

    def initial_policy_state(self, batch_size):
        latent = self.wm.rssm.initial(batch_size)
        return latent, tf.zeros([batch_size, self.act_dim], tf.float32)

    def initial_train_state(self, batch_size):
        return self.wm.rssm.initial(batch_size)

    def inputs(self, data, *extra):
        """The model's inputs among `data`'s keys (observations, plus `extra` such as the action)."""
        return {k: data[k] for k in self.input_keys + extra if k in data}

    # Policy --------------------------------------------------------------------------------------

    def policy(self, obs, state, mode='train'):
        """Actions for a batch of observations. `obs` needs the encoder's keys and `is_first`;
        returns ({'action': [B, A] float32}, new state)."""
        if mode not in MODES:
            raise ValueError(f"policy mode must be one of {', '.join(MODES)}, got '{mode}'")
        return self._policy_fn(self.inputs(obs), state, mode)

    def _policy(self, obs, state, mode):
        seed = tf.transpose(self.rng.make_seeds(1))[0]
        return self.policy_step(obs, state, mode, seed)

    def policy_step(self, obs, state, mode, seed):
        """Pure policy step (randomness from `seed`, int [2]); the exported SavedModel calls it."""
        latent, action = state
        latent_seed, action_seed, noise_seed = split_seed(seed, 3)
        obs = self.wm.preprocess(obs)
        embed = self.wm.encoder(obs)
        # The original also used the mean state in explore mode (spec 17.11); only eval does here.
        sample = mode != 'eval' or not self.config.eval_state_mean
        latent, _ = self.wm.rssm.obs_step(latent, action, embed, obs['is_first'], latent_seed,
                                          sample)
        feat = self.wm.rssm.get_feat(latent)
        if mode == 'eval':
            action = self.task_behavior.actor(feat).mode()
            noise = self.config.eval_noise
        else:
            behavior = self.expl_behavior if mode == 'explore' else self.task_behavior
            action = behavior.actor(feat).sample(action_seed)
            noise = self.config.expl_noise
        action = tf.cast(self._action_noise(action, noise, noise_seed), tf.float32)
        return {'action': action}, (latent, action)

    def _action_noise(self, action, amount, seed):
        if amount == 0:
            return action
        if self.act_space['action'].discrete:
            probs = amount / self.act_dim + (1 - amount) * action
            index = dists.sample_categorical(tf.math.log(probs), seed)
            return tf.one_hot(index, self.act_dim, dtype=tf.float32)
        noise = tf.random.stateless_normal(tf.shape(action), seed) * amount
        return tf.clip_by_value(action + noise, -1.0, 1.0)

    # Training ------------------------------------------------------------------------------------

    def train(self, data, state):
        """One update of every network on a batch of [B, T] sequences; returns (state, metrics)."""
        return self._train_fn(self.inputs(data, 'action'), state)

    def _train(self, data, state):
        wm_seed, task_seed, expl_seed = split_seed(tf.transpose(self.rng.make_seeds(1))[0], 3)
        state, outputs, metrics = self.wm.train(data, state, wm_seed)
        start = outputs['post']

        def reward_fn(seq):
            return self.wm.heads['reward'](seq['feat']).mode()

        metrics.update(self.task_behavior.train(self.wm, start, data['is_terminal'], reward_fn,
                                                task_seed))
        if self.expl_behavior is not self.task_behavior:
            expl_metrics = self.expl_behavior.train(start, outputs, data, expl_seed)
            metrics.update({f'expl_{k}': v for k, v in expl_metrics.items()})
        return state, metrics

    def report(self, data):
        """Open-loop video predictions {'openl_<key>': [T, 3H, 6W, C] float in [0, 1]}."""
        return self._report_fn(self.inputs(data, 'action'))

    def _report(self, data):
        return self.wm.report(data, tf.transpose(self.rng.make_seeds(1))[0])
