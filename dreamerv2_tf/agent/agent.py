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

from dreamerv2_tf import protocol
from dreamerv2_tf.agent import choices
from dreamerv2_tf.agent import exploration
from dreamerv2_tf.agent.actor_critic import ActorCritic
from dreamerv2_tf.agent.distributions import split_seed
from dreamerv2_tf.agent.optimizer import MIXED_FLOAT16, is_mixed
from dreamerv2_tf.agent.policy import MODES, Policy
from dreamerv2_tf.agent.world_model import WorldModel



def precision_policy(precision):
    """The dtype policy for the `precision` config value: 16 -> mixed_float16, 32 -> float32,
    auto -> mixed_float16 where a GPU is visible and float32 on a CPU (where float16 is slow)."""
    if precision == 'auto':
        return MIXED_FLOAT16 if tf.config.list_physical_devices('GPU') else 'float32'
    if precision not in (16, 32):
        raise ValueError(f"precision must be one of 16, 32, auto; got {precision!r}")
    return MIXED_FLOAT16 if precision == 16 else 'float32'


class Agent:

    def __init__(self, config, obs_space, act_space):
        choices.check(config)  # the same table the config system validates flags against
        self.config = config
        self.obs_space = dict(obs_space)
        self.act_space = dict(act_space)
        self.dtype = precision_policy(config.precision)
        # The resolved precision as a number (exported SavedModels record it).
        self.precision = 16 if is_mixed(self.dtype) else 32
        if config.precision == 'auto':
            print(f'Precision auto: {self.dtype} '
                  f"({'a GPU is' if self.precision == 16 else 'no GPU is'} visible).", flush=True)
        self.act_dim = act_space['action'].shape[0]
        # What the networks may read: `log_` keys are logged, never fed to the model, and keys
        # outside the train env's space (an eval env's video frames) are not inputs either.
        self.input_keys = tuple(k for k in self.obs_space if protocol.is_model_input(k))
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name='step')
        self.rng = tf.random.Generator.from_seed(config.seed)
        self.wm = WorldModel(config, self.obs_space, self.act_space, self.dtype)
        # Behaviours in a fixed order (task first): networks, optimizers and state variables are
        # listed in this order, and each trains on its own seed.
        self.behaviors = {'task': ActorCritic(config, self.act_space, self.step, self.dtype,
                                              world=self.wm)}
        if config.expl_behavior != 'greedy':
            self.behaviors['expl'] = exploration.make(config, self.act_space, self.wm, self.step,
                                                      self.dtype)
        # The acting half (encoder, RSSM posterior step, actors): what the agent acts with and
        # what an export serves.
        self.acting = Policy(config, self.obs_space, self.act_space, self.dtype, self.wm.encoder,
                             self.wm.rssm, {'train': self.task_behavior.actor,
                                            'eval': self.task_behavior.actor,
                                            'explore': self.expl_behavior.actor},
                             self.wm.preprocess)
        self._build()
        self._compile(config.jit)

    def _build(self):
        """Creates every variable eagerly, before any function is traced."""
        seed = tf.constant([0, 0], tf.int64)
        data = {k: np.zeros((1, 2) + self.obs_space[k].shape, self.obs_space[k].dtype)
                for k in self.input_keys}
        data['action'] = np.zeros((1, 2, self.act_dim), np.float32)
        feat = self.wm.build(data, seed)
        for behavior in self.behaviors.values():
            behavior.build(feat, data, seed)

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
    def task_behavior(self):
        return self.behaviors['task']

    @property
    def expl_behavior(self):
        """The behaviour that collects data in explore mode (the task behaviour when greedy)."""
        return self.behaviors.get('expl', self.behaviors['task'])

    @property
    def networks(self):
        return self.wm.networks + [n for b in self.behaviors.values() for n in b.networks]

    @property
    def optimizers(self):
        return [self.wm.opt] + [o for b in self.behaviors.values() for o in b.optimizers]

    @property
    def state_variables(self):
        """Variables outside networks and optimizers (counters, normalisers)."""
        return [self.step] + [v for b in self.behaviors.values() for v in b.state_variables]

    def initial_policy_state(self, batch_size):
        return self.acting.initial_state(batch_size)

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
        """Pure policy step (randomness from `seed`, int [2]): the acting half's step."""
        return self.acting.step(obs, state, mode, seed)

    # Training ------------------------------------------------------------------------------------

    def train(self, data, state):
        """One update of every network on a batch of [B, T] sequences; returns (state, metrics)."""
        return self._train_fn(self.inputs(data, 'action'), state)

    def _train(self, data, state):
        # Always three seeds, whether or not there is an exploration behaviour, so that the world
        # model and task draws do not depend on `expl_behavior`.
        wm_seed, task_seed, expl_seed = split_seed(tf.transpose(self.rng.make_seeds(1))[0], 3)
        seeds = {'task': task_seed, 'expl': expl_seed}
        state, outputs, metrics = self.wm.train(data, state, wm_seed)
        start = outputs['post']
        for name, behavior in self.behaviors.items():
            behavior_metrics = behavior.train(start, outputs, data, seeds[name])
            prefix = '' if name == 'task' else f'{name}_'  # task metrics keep the paper's names
            metrics.update({prefix + k: v for k, v in behavior_metrics.items()})
        return state, metrics

    def report(self, data):
        """Open-loop video predictions {'openl_<key>': [T, 3H, 6W, C] float in [0, 1]}."""
        return self._report_fn(self.inputs(data, 'action'))

    def _report(self, data):
        return self.wm.report(data, tf.transpose(self.rng.make_seeds(1))[0])
