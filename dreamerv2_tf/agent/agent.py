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

Given a `tf.distribute` strategy, every variable (networks, optimizer state, slow critic, loss
scale, counters and the generator) is created in its scope, and `train` takes a distributed
batch (`dataset.batch` sequences per replica) and runs the update with `strategy.run`: one seed
per update, drawn in cross-replica context and the same on every replica, from which each
replica samples its rows of the global batch (`replicas.batch_noise`); gradients and batch
statistics are averaged over replicas, so R replicas x batch B train like one device with batch
R x B. The policy and the report run in cross-replica context, on the first replica's weights.
"""

import contextlib

import numpy as np
import tensorflow as tf

from dreamerv2_tf import protocol
from dreamerv2_tf.agent import choices
from dreamerv2_tf.agent import exploration
from dreamerv2_tf.agent import replicas
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

    def __init__(self, config, obs_space, act_space, strategy=None):
        choices.check(config)  # the same table the config system validates flags against
        self.config = config
        self.strategy = strategy  # None: one device, no tf.distribute at all
        with strategy.scope() if strategy else contextlib.nullcontext():
            self._create(config, obs_space, act_space)
        self._compile(config.jit)

    def _create(self, config, obs_space, act_space):
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
            self._policy_fn, self._report_fn = self._policy, self._report
            self._train_fn = self._train_replicated if self.strategy else self._train
            return
        # No AutoGraph: tensor-dependent control flow is explicit (tf.scan, tf.cond) and every
        # Python branch or loop is over static values, so converting the source only costs time
        # (about half of each trace).
        xla = jit == 'xla'
        self._policy_fn = tf.function(self._policy, jit_compile=xla, autograph=False)
        self._report_fn = tf.function(self._report, autograph=False)
        if self.strategy:
            # A graph without XLA: the replica function synchronises (all-reduces, merge_call for
            # the variable updates), which neither a nested tf.function nor XLA may contain.
            self._train_fn = tf.function(self._train_replicated, autograph=False)
            return
        self._train_fn = tf.function(self._train, jit_compile=xla, autograph=False)

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
        """The RSSM state the first update starts from; per replica under a strategy."""
        if self.strategy:
            return self.strategy.experimental_distribute_values_from_function(
                lambda context: self.wm.rssm.initial(batch_size))
        return self.wm.rssm.initial(batch_size)

    def distribute(self, make_dataset):
        """`make_dataset()` (a `tf.data.Dataset` of per-replica batches) as the train step takes
        it: one input pipeline per worker, its batches dealt to the worker's replicas in turn.
        Without a strategy, the dataset itself."""
        if not self.strategy:
            return make_dataset()
        return self.strategy.distribute_datasets_from_function(lambda context: make_dataset())

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
        """One update of every network on a batch of [B, T] sequences; returns (state, metrics).
        Under a strategy `data` and `state` are distributed values (B per replica; see
        `distribute` and `initial_train_state`) and the metrics are averaged over replicas."""
        return self._train_fn(self.inputs(data, 'action'), state)

    def _train(self, data, state):
        return self._train_step(data, state, tf.transpose(self.rng.make_seeds(1))[0])

    def _train_replicated(self, data, state):
        seed = tf.transpose(self.rng.make_seeds(1))[0]  # cross-replica: one seed for all
        names = []

        def replica_fn(data, state, seed):
            state, metrics = self._train_step(data, state, seed)
            names[:] = sorted(metrics)  # traced once per replica; the same keys each time
            # One all-reduce for all metrics instead of one per scalar.
            packed = tf.stack([tf.cast(metrics[k], tf.float32) for k in sorted(metrics)])
            return state, replicas.mean(packed)

        state, packed = self.strategy.run(replica_fn, args=(data, state, seed))
        packed = self.strategy.experimental_local_results(packed)[0]
        return state, dict(zip(names, tf.unstack(packed)))

    def _train_step(self, data, state, seed):
        # Always three seeds, whether or not there is an exploration behaviour, so that the world
        # model and task draws do not depend on `expl_behavior`.
        wm_seed, task_seed, expl_seed = split_seed(seed, 3)
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
