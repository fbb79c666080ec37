"""Actor-critic learned in imagination (spec 9): lambda-returns from a slow target critic, actor
gradients by reinforce, dynamics backpropagation or both, an entropy bonus that may follow a
schedule, and reward normalisation."""

import tensorflow as tf

from dreamerv2_tf import schedules
from dreamerv2_tf.agent import choices
from dreamerv2_tf.agent import networks
from dreamerv2_tf.agent import replicas
from dreamerv2_tf.agent.behavior import Behavior
from dreamerv2_tf.agent.optimizer import Optimizer, is_mixed

sg = tf.stop_gradient


def lambda_return(reward, value, discount, bootstrap, lambda_):
    """TD(lambda) targets along axis 0 (time-major).

    R_t = r_t + d_t * ((1 - lambda) * v_{t+1} + lambda * R_{t+1}), with R_T = bootstrap, where
    `value[t]` is v_t and `value[t + 1]` (or the bootstrap for the last step) is v_{t+1}."""
    next_values = tf.concat([value[1:], bootstrap[None]], 0)
    inputs = reward + discount * next_values * (1 - lambda_)

    def step(agg, cur):
        step_input, step_discount = cur
        return step_input + step_discount * lambda_ * agg

    return tf.scan(step, (inputs, discount), bootstrap, reverse=True)


class StreamNorm:
    """Divides by a running mean magnitude (spec 9.3). With momentum 1 it only divides by 1 + eps."""

    def __init__(self, shape=(), momentum=0.99, scale=1.0, eps=1e-8, name='streamnorm'):
        self.momentum = momentum
        self.scale = scale
        self.eps = eps
        self.mag = tf.Variable(tf.ones(shape, tf.float64), trainable=False, name=f'{name}/mag')

    def __call__(self, inputs):
        batch = tf.reshape(tf.cast(inputs, tf.float64), [-1] + list(self.mag.shape))
        mag = replicas.mean(tf.reduce_mean(tf.abs(batch), 0))  # of the global batch
        mag = self.momentum * self.mag + (1 - self.momentum) * mag
        replicas.cross_replica(self.mag.assign, mag)
        normed = inputs / tf.cast(mag + self.eps, inputs.dtype) * self.scale
        metrics = {'mean': tf.reduce_mean(inputs), 'std': tf.math.reduce_std(inputs),
                   'normed_mean': tf.reduce_mean(normed), 'normed_std': tf.math.reduce_std(normed)}
        return normed, metrics


def make_actor(config, act_space, name, dtype):
    """The actor network: an MLP whose output distribution `actor.dist` picks (auto: onehot for
    discrete actions, trunc_normal for continuous ones)."""
    space = act_space['action']
    dist = config.actor.dist
    if dist != 'auto' and dist not in choices.ACTOR_DISTS:
        raise ValueError(f"actor.dist '{dist}' is not one of auto, "
                         f"{', '.join(choices.ACTOR_DISTS)}")
    if dist == 'auto':
        dist = 'onehot' if space.discrete else 'trunc_normal'
    if space.discrete and dist != 'onehot':
        raise ValueError(f"actor.dist '{dist}' needs continuous actions; this task's are discrete")
    if not space.discrete and dist == 'onehot':
        raise ValueError("actor.dist 'onehot' needs discrete actions; this task's are continuous")
    return networks.MLP(space.shape, **{**config.actor, 'dist': dist}, name=name, dtype=dtype)


class ActorCritic(Behavior):
    """The task behaviour (and the learner inside the intrinsic exploration behaviours).

    `world` is the world model (for imagination and, by default, the reward); `reward_fn(seq)`
    replaces the predicted task reward (exploration's intrinsic rewards). Both are only needed by
    `train`; `learn` takes them as arguments."""

    def __init__(self, config, act_space, step, dtype='float32', name='task', world=None,
                 reward_fn=None):
        self.config = config
        self.step = step  # agent step variable, read by the schedules
        self.world = world
        self.reward_fn = reward_fn
        space = act_space['action']
        self.discrete = space.discrete
        self.actor_grad = config.actor_grad
        if self.actor_grad != 'auto' and self.actor_grad not in choices.ACTOR_GRADS:
            raise ValueError(f"actor_grad '{self.actor_grad}' is not one of auto, "
                             f"{', '.join(choices.ACTOR_GRADS)}")
        if self.actor_grad == 'auto':
            self.actor_grad = 'reinforce' if self.discrete else 'dynamics'
        self.actor = make_actor(config, act_space, f'{name}_actor', dtype)
        self.critic = networks.MLP([], **config.critic, name=f'{name}_critic', dtype=dtype)
        self.slow_critic = networks.MLP([], **config.critic, name=f'{name}_slow_critic', dtype=dtype)
        self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name=f'{name}_updates')
        mixed = is_mixed(dtype)
        self.actor_opt = Optimizer('actor', **config.actor_opt, mixed_precision=mixed)
        self.critic_opt = Optimizer('critic', **config.critic_opt, mixed_precision=mixed)
        self.reward_norm = StreamNorm(**config.reward_norm, name=f'{name}_reward_norm')

    @property
    def networks(self):
        return [self.actor, self.critic, self.slow_critic]

    @property
    def optimizers(self):
        return [self.actor_opt, self.critic_opt]

    @property
    def state_variables(self):
        """Non-network state for checkpoints."""
        return [self.updates, self.reward_norm.mag]

    def build(self, feat, data=None, seed=None):
        """Creates the networks' variables from features `feat`; `data` and `seed` are unused (the
        behaviour protocol passes them to every behaviour)."""
        for net in self.networks:
            net(feat)
        self.actor_opt.build(self.actor.trainable_variables)
        self.critic_opt.build(self.critic.trainable_variables)

    @property
    def target_critic(self):
        return self.slow_critic if self.config.slow_target else self.critic

    def train(self, start, outputs, data, seed):
        """Behaviour protocol: `learn` with the constructor's world model and reward."""
        reward_fn = self.reward_fn or (lambda seq: self.world.reward(seq['feat']))
        return self.learn(self.world, start, data['is_terminal'], reward_fn, seed)

    def learn(self, world_model, start, is_terminal, reward_fn, seed):
        """One actor and one critic update from imagined rollouts of every start state."""
        metrics = {}
        horizon = self.config.imag_horizon
        with tf.GradientTape() as actor_tape:
            seq = world_model.imagine(self.actor, start, is_terminal, horizon, seed)
            reward = reward_fn(seq)
            seq['reward'], reward_metrics = self.reward_norm(reward)
            metrics.update({f'reward_{k}': v for k, v in reward_metrics.items()})
            target, target_metrics = self.target(seq)
            actor_loss, actor_metrics = self.actor_loss(seq, target)
        metrics.update(target_metrics)
        metrics.update(actor_metrics)
        with tf.GradientTape() as critic_tape:
            critic_loss, critic_metrics = self.critic_loss(seq, target)
        metrics.update(critic_metrics)
        metrics.update(self.actor_opt(actor_tape, actor_loss, self.actor.trainable_variables))
        metrics.update(self.critic_opt(critic_tape, critic_loss, self.critic.trainable_variables))
        self.update_slow_target()
        return metrics

    def target(self, seq):
        """Lambda-returns [H, N] of the imagined rewards, bootstrapped from the slow critic."""
        reward = tf.cast(seq['reward'], tf.float32)
        disc = tf.cast(seq['discount'], tf.float32)
        value = self.target_critic(seq['feat']).mode()
        target = lambda_return(reward[:-1], value[:-1], disc[:-1], value[-1],
                               self.config.discount_lambda)
        metrics = {'critic_slow': tf.reduce_mean(value), 'critic_target': tf.reduce_mean(target)}
        return target, metrics

    def actor_loss(self, seq, target):
        """-mean(weight * (objective + entropy bonus)) over states 0..H-2 (spec 9.4)."""
        metrics = {}
        policy = self.actor(sg(seq['feat'][:-2]))
        if self.actor_grad == 'dynamics':
            objective = target[1:]
        else:
            # `slow_baseline` was never read by the original (spec 17.2); its default is the same.
            baseline_net = self.target_critic if self.config.slow_baseline else self.critic
            baseline = baseline_net(seq['feat'][:-2]).mode()
            advantage = sg(target[1:] - baseline)
            if self.actor_grad == 'reinforce':
                objective = policy.log_prob(sg(seq['action'][1:-1])) * advantage
            else:  # both
                mix = schedules.value(self.config.actor_grad_mix, self.step)
                reinforce = policy.log_prob(seq['action'][1:-1]) * advantage
                objective = mix * target[1:] + (1 - mix) * reinforce
                metrics['actor_grad_mix'] = mix
        entropy = policy.entropy()
        ent_scale = schedules.value(self.config.actor_ent, self.step)
        objective += ent_scale * entropy
        weight = sg(tf.cast(seq['weight'], tf.float32))
        loss = -tf.reduce_mean(weight[:-2] * objective)
        metrics['actor_ent'] = tf.reduce_mean(entropy)
        metrics['actor_ent_scale'] = ent_scale
        return loss, metrics

    def critic_loss(self, seq, target):
        """Weighted regression of the critic onto the (fixed) lambda-returns, states 0..H-1."""
        dist = self.critic(seq['feat'][:-1])
        weight = sg(tf.cast(seq['weight'], tf.float32))
        loss = -tf.reduce_mean(dist.log_prob(sg(target)) * weight[:-1])
        return loss, {'critic': tf.reduce_mean(dist.mode())}

    def update_slow_target(self):
        """Every `slow_target_update` updates, slow <- mix * critic + (1 - mix) * slow (once, in
        cross-replica context, when training on many replicas: identical on all of them)."""
        replicas.cross_replica(self._update_slow_target)

    def _update_slow_target(self):
        if self.config.slow_target:
            due = tf.equal(self.updates % self.config.slow_target_update, 0)
            mix = tf.where(self.updates == 0, 1.0, float(self.config.slow_target_fraction))
            tf.cond(due, lambda: self._copy_to_slow(mix), tf.no_op)
        self.updates.assign_add(1)

    def _copy_to_slow(self, mix):
        for source, dest in zip(self.critic.variables, self.slow_critic.variables):
            dest.assign(mix * source + (1 - mix) * dest)
        return tf.no_op()
