"""Exploration behaviours (spec 11), selected by `expl_behavior`: `Random`, `Plan2Explore` and
`ModelLoss`. (`greedy` is the task actor-critic itself and lives in the agent.)

Fixed against the original (spec 17.5): `Random` works; Plan2Explore's `feat` and `embed` targets
take their sizes from the networks; with `disag_action_cond` the ensemble sees the action taken at
step t (the one stored at t + 1), not the one that led into t.
"""

import tensorflow as tf

from dreamerv2_tf.agent import distributions as dists
from dreamerv2_tf.agent import networks
from dreamerv2_tf.agent.actor_critic import ActorCritic, StreamNorm
from dreamerv2_tf.agent.optimizer import Optimizer

sg = tf.stop_gradient


def make(config, act_space, world_model, step, dtype):
    kinds = {'Random': Random, 'Plan2Explore': Plan2Explore, 'ModelLoss': ModelLoss}
    return kinds[config.expl_behavior](config, act_space, world_model, step, dtype)


class Uniform:
    """Uniform actions: one-hot over `size` classes, or each dimension in [-1, 1]."""

    def __init__(self, batch_shape, size, discrete):
        self.shape = tf.concat([batch_shape, [size]], 0)
        self.size = size
        self.discrete = discrete

    def sample(self, seed):
        if self.discrete:
            return dists.OneHot(tf.zeros(self.shape)).sample(seed)
        return tf.random.stateless_uniform(self.shape, seed, -1.0, 1.0)

    def mode(self):
        raise ValueError('the Random behaviour has no mode; it only samples')


class Random:
    """Uniformly random actions; nothing to train."""

    networks = optimizers = state_variables = ()

    def __init__(self, config, act_space, world_model, step, dtype):
        space = act_space['action']
        self.size, self.discrete = space.shape[0], space.discrete

    def actor(self, feat):
        return Uniform(tf.shape(feat)[:-1], self.size, self.discrete)

    def build(self, feat, data, seed):
        pass

    def train(self, start, outputs, data, seed):
        return {}


class _IntrinsicBehavior:
    """Shared part: an own actor-critic trained on an intrinsic reward, plus extra networks."""

    def __init__(self, config, act_space, world_model, step, dtype):
        self.config = config
        self.wm = world_model
        self.ac = ActorCritic(config, act_space, step, dtype, name='expl')
        self.actor = self.ac.actor
        self.opt = Optimizer('expl', **config.expl_opt, mixed_precision=dtype == 'mixed_float16')
        self.extr_norm = StreamNorm(**config.expl_reward_norm, name='expl_extr_norm')

    heads = ()

    @property
    def networks(self):
        return self.ac.networks + list(self.heads)

    @property
    def optimizers(self):
        return [self.ac.actor_opt, self.ac.critic_opt, self.opt]

    @property
    def state_variables(self):
        return self.ac.state_variables + [self.extr_norm.mag]

    def head_variables(self):
        return [v for head in self.heads for v in head.trainable_variables]

    def extrinsic(self, seq):
        if not self.config.expl_extr_scale:
            return 0.0
        reward = self.wm.heads['reward'](seq['feat']).mode()
        return self.config.expl_extr_scale * self.extr_norm(reward)[0]


class Plan2Explore(_IntrinsicBehavior):
    """Reward = disagreement (std across an ensemble) of one-step predictions (spec 11.1)."""

    def __init__(self, config, act_space, world_model, step, dtype):
        super().__init__(config, act_space, world_model, step, dtype)
        self.dtype = dtype
        self.intr_norm = StreamNorm(**config.expl_reward_norm, name='expl_intr_norm')
        self.heads = []  # created in build(), once the embedding size is known

    @property
    def state_variables(self):
        return super().state_variables + [self.intr_norm.mag]

    def _target(self, outputs):
        post = outputs['post']
        stoch = post['stoch']
        if self.wm.rssm.discrete:
            stoch = tf.reshape(stoch, tf.concat([tf.shape(stoch)[:-2], [-1]], 0))
        return {'stoch': stoch, 'deter': post['deter'], 'feat': outputs['feat'],
                'embed': outputs['embed']}[self.config.disag_target]

    def _inputs(self, feat, action):
        """Inputs for steps 0..T-2: the features, with the action taken at each step (the one
        stored one step later) when action-conditioned. Batch-major [B, T, ...]."""
        feat = tf.cast(feat[:, :-1], tf.float32)
        if self.config.disag_action_cond:
            return tf.concat([feat, tf.cast(action[:, 1:], tf.float32)], -1)
        return feat

    def build(self, feat, data, seed):
        self.ac.build(feat)
        embed = self.wm.encoder(self.wm.preprocess(data))
        rssm = self.wm.rssm
        size = {'stoch': rssm.stoch_size * (rssm.discrete or 1), 'deter': rssm.deter_size,
                'feat': rssm.feat_size, 'embed': embed.shape[-1]}[self.config.disag_target]
        self.heads = [networks.MLP([size], **self.config.expl_head, name=f'disag{i}',
                                   dtype=self.dtype) for i in range(self.config.disag_models)]
        inputs = self._inputs(feat, tf.convert_to_tensor(data['action']))
        for head in self.heads:
            head(inputs)
        self.opt.build(self.head_variables())

    def train(self, start, outputs, data, seed):
        offset = self.config.disag_offset
        inputs = sg(self._inputs(outputs['feat'], data['action']))
        targets = sg(tf.cast(self._target(outputs), tf.float32))
        # Input t (state t, action taken at t) predicts the target `offset` steps later.
        length = tf.shape(targets)[1] - offset
        inputs, targets = inputs[:, :length], targets[:, offset:]
        with tf.GradientTape() as tape:
            loss = -tf.add_n([tf.reduce_mean(head(inputs).log_prob(targets))
                              for head in self.heads])
        metrics = self.opt(tape, loss, self.head_variables())
        metrics.update(self.ac.train(self.wm, start, data['is_terminal'], self._reward, seed))
        return metrics

    def _reward(self, seq):
        # Reward for entering state t: disagreement about t given state t-1 and action t.
        feat = tf.transpose(seq['feat'], [1, 0, 2])
        action = tf.transpose(seq['action'], [1, 0, 2])
        inputs = self._inputs(feat, action)
        preds = tf.stack([head(inputs).mode() for head in self.heads], 0)
        disag = tf.reduce_mean(tf.math.reduce_std(preds, 0), -1)  # [N, H]
        if self.config.disag_log:
            disag = tf.math.log(disag)
        disag = tf.concat([tf.zeros_like(disag[:, :1]), disag], 1)
        reward = self.config.expl_intr_scale * self.intr_norm(tf.transpose(disag))[0]
        return reward + self.extrinsic(seq)


class ModelLoss(_IntrinsicBehavior):
    """Reward = a head's prediction of a world-model loss term (default: the KL), spec 11.2."""

    def __init__(self, config, act_space, world_model, step, dtype):
        super().__init__(config, act_space, world_model, step, dtype)
        self.head = networks.MLP([], **config.expl_head, name='expl_model_loss', dtype=dtype)
        self.heads = [self.head]

    def build(self, feat, data, seed):
        self.ac.build(feat)
        self.head(feat)
        self.opt.build(self.head_variables())

    def train(self, start, outputs, data, seed):
        target = sg(tf.cast(outputs[self.config.expl_model_loss], tf.float32))
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(self.head(sg(outputs['feat'])).log_prob(target))
        metrics = self.opt(tape, loss, self.head_variables())
        metrics.update(self.ac.train(self.wm, start, data['is_terminal'], self._reward, seed))
        return metrics

    def _reward(self, seq):
        reward = self.config.expl_intr_scale * self.head(seq['feat']).mode()
        return reward + self.extrinsic(seq)
