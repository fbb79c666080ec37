"""Exploration behaviours (spec 11), selected by `expl_behavior`: `Random`, `Plan2Explore` and
`ModelLoss`. (`greedy` is the task actor-critic itself and lives in the agent.) Each implements the
`Behavior` protocol and reads the world model only through its narrow interface (`reward`,
`embed`, `flat_stoch`, `stoch_size`, `deter_size`, `feat_size`, `imagine`).

Fixed against the original (spec 17.5): `Random` works; Plan2Explore's `feat` and `embed` targets
take their sizes from the networks; with `disag_action_cond` the ensemble sees the action taken at
step t (the one stored at t + 1), not the one that led into t.
"""

import tensorflow as tf

from dreamerv2_tf.agent import choices
from dreamerv2_tf.agent import distributions as dists
from dreamerv2_tf.agent import networks
from dreamerv2_tf.agent import replicas
from dreamerv2_tf.agent.actor_critic import ActorCritic, StreamNorm
from dreamerv2_tf.agent.behavior import Behavior
from dreamerv2_tf.agent.optimizer import Optimizer, is_mixed

sg = tf.stop_gradient


def make(config, act_space, world_model, step, dtype):
    if config.expl_behavior not in BEHAVIORS:
        raise ValueError(f"expl_behavior '{config.expl_behavior}' is not one of greedy, "
                         f"{', '.join(BEHAVIORS)}")
    return BEHAVIORS[config.expl_behavior](config, act_space, world_model, step, dtype)


class Uniform:
    """Uniform actions: one-hot over `size` classes, or each dimension in [-1, 1]."""

    def __init__(self, batch_shape, size, discrete):
        self.shape = tf.concat([batch_shape, [size]], 0)
        self.size = size
        self.discrete = discrete

    def sample(self, seed):
        if self.discrete:
            return dists.OneHot(tf.zeros(self.shape)).sample(seed)
        return replicas.batch_noise(
            lambda shape: tf.random.stateless_uniform(shape, seed, -1.0, 1.0), self.shape)

    def mode(self):
        raise ValueError('the Random behaviour has no mode; it only samples')


class Random(Behavior):
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


class _IntrinsicBehavior(Behavior):
    """Shared part: an own actor-critic trained on an intrinsic reward (`_reward(seq)`), plus
    extra networks (`heads`) trained by `train_heads(outputs, data)` with their own optimizer."""

    def __init__(self, config, act_space, world_model, step, dtype):
        self.config = config
        self.wm = world_model
        self.ac = ActorCritic(config, act_space, step, dtype, name='expl', world=world_model,
                              reward_fn=self._reward)
        self.actor = self.ac.actor
        self.opt = Optimizer('expl', **config.expl_opt, mixed_precision=is_mixed(dtype))
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
        reward = self.wm.reward(seq['feat'])
        return self.config.expl_extr_scale * self.extr_norm(reward)[0]

    def build(self, feat, data, seed):
        self.ac.build(feat)
        self.build_heads(feat, data)
        self.opt.build(self.head_variables())

    def train(self, start, outputs, data, seed):
        # Heads first, then the actor-critic on the updated heads' reward (the original's order).
        with tf.GradientTape() as tape:
            loss = self.head_loss(outputs, data)
        metrics = self.opt(tape, loss, self.head_variables())
        metrics.update(self.ac.train(start, outputs, data, seed))
        return metrics


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
        return DISAG_TARGETS[self.config.disag_target](self.wm, outputs, post)

    def _inputs(self, feat, action):
        """Inputs for steps 0..T-2: the features, with the action taken at each step (the one
        stored one step later) when action-conditioned. Batch-major [B, T, ...]."""
        feat = tf.cast(feat[:, :-1], tf.float32)
        if self.config.disag_action_cond:
            return tf.concat([feat, tf.cast(action[:, 1:], tf.float32)], -1)
        return feat

    def build_heads(self, feat, data):
        wm = self.wm
        target = self.config.disag_target
        if target == 'embed':
            size = wm.embed(data).shape[-1]
        else:
            size = {'stoch': wm.stoch_size, 'deter': wm.deter_size, 'feat': wm.feat_size}[target]
        self.heads = [networks.MLP([size], **self.config.expl_head, name=f'disag{i}',
                                   dtype=self.dtype) for i in range(self.config.disag_models)]
        inputs = self._inputs(feat, tf.convert_to_tensor(data['action']))
        for head in self.heads:
            head(inputs)

    def head_loss(self, outputs, data):
        offset = self.config.disag_offset
        inputs = sg(self._inputs(outputs['feat'], data['action']))
        targets = sg(tf.cast(self._target(outputs), tf.float32))
        # Input t (state t, action taken at t) predicts the target `offset` steps later.
        length = tf.shape(targets)[1] - offset
        inputs, targets = inputs[:, :length], targets[:, offset:]
        return -tf.add_n([tf.reduce_mean(head(inputs).log_prob(targets)) for head in self.heads])

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

    def build_heads(self, feat, data):
        self.head(feat)

    def head_loss(self, outputs, data):
        target = sg(tf.cast(outputs[self.config.expl_model_loss], tf.float32))
        return -tf.reduce_mean(self.head(sg(outputs['feat'])).log_prob(target))

    def _reward(self, seq):
        reward = self.config.expl_intr_scale * self.head(seq['feat']).mode()
        return reward + self.extrinsic(seq)


# `disag_target` config value -> Plan2Explore's prediction target from the world model's outputs.
DISAG_TARGETS = choices.implements(choices.DISAG_TARGETS, {
    'stoch': lambda wm, outputs, post: wm.flat_stoch(post),
    'deter': lambda wm, outputs, post: post['deter'],
    'embed': lambda wm, outputs, post: outputs['embed'],
    'feat': lambda wm, outputs, post: outputs['feat'],
})

# `expl_behavior` config value (other than 'greedy', the task behaviour) -> behaviour class.
BEHAVIORS = choices.implements(choices.EXPLORATION, {
    'Random': Random,
    'Plan2Explore': Plan2Explore,
    'ModelLoss': ModelLoss,
})
