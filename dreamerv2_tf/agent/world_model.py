"""World model (spec 7): encoder, RSSM and heads (decoder, reward, discount), its loss with KL
balancing, imagination for the actor-critic, and the open-loop video report."""

import tensorflow as tf

from dreamerv2_tf import protocol
from dreamerv2_tf.agent import choices
from dreamerv2_tf.agent import networks
from dreamerv2_tf.agent.distributions import split_seed
from dreamerv2_tf.agent.optimizer import Optimizer, is_mixed

sg = tf.stop_gradient

# `clip_rewards` config value -> transform of the float32 reward for training.
REWARD_TRANSFORMS = choices.implements(choices.REWARD_TRANSFORMS, {
    'identity': tf.identity,
    'sign': tf.sign,
    'tanh': tf.tanh,
})


def preprocess(obs, config, compute_dtype):
    """What `WorldModel.preprocess` does, for a given compute dtype (a float32 policy copy of a
    mixed-precision model uses it too)."""
    result = {}
    for key, value in obs.items():
        if not protocol.is_model_input(key):
            continue
        value = tf.convert_to_tensor(value)
        if value.dtype == tf.uint8:
            value = tf.cast(value, compute_dtype) / 255.0 - 0.5
        elif value.dtype in (tf.int32, tf.int64, tf.float16, tf.float64):
            value = tf.cast(value, compute_dtype)
        result[key] = value
    if 'reward' in result:
        result['reward'] = REWARD_TRANSFORMS[config.clip_rewards](
            tf.cast(result['reward'], tf.float32))
    if 'is_terminal' in result:
        # Kept in float32: the original's float16 made 0.999 into 0.99902.
        result['discount'] = config.discount * (
            1.0 - tf.cast(result['is_terminal'], tf.float32))
    return result


class WorldModel:

    def __init__(self, config, obs_space, act_space, dtype='float32'):
        self.config = config
        self.obs_space = obs_space
        self.act_dim = act_space['action'].shape[0]
        self.dtype = dtype
        self.compute_dtype = tf.float16 if is_mixed(dtype) else tf.float32
        self.encoder = networks.Encoder(obs_space, **config.encoder, name='encoder', dtype=dtype)
        self.rssm = networks.RSSM(**config.rssm, name='rssm', dtype=dtype)
        self.heads = {'decoder': networks.Decoder(obs_space, **config.decoder, name='decoder',
                                                  dtype=dtype)}
        self.heads['reward'] = networks.MLP([], **config.reward_head, name='reward', dtype=dtype)
        if config.pred_discount:
            self.heads['discount'] = networks.MLP([], **config.discount_head, name='discount',
                                                  dtype=dtype)
        for name in config.grad_heads:
            if name not in self.heads:
                raise ValueError(f"grad_heads names '{name}', which is not one of {list(self.heads)}")
        self.opt = Optimizer('model', **config.model_opt, mixed_precision=is_mixed(dtype))

    @property
    def networks(self):
        return [self.encoder, self.rssm, *self.heads.values()]

    @property
    def trainable_variables(self):
        return [v for net in self.networks for v in net.trainable_variables]

    def build(self, data, seed):
        """Creates every variable with one eager pass through each network's `__call__` (so that
        variable paths carry the network's name) and builds the optimizer."""
        data = self.preprocess(data)
        embed = self.encoder(data)
        post, _ = self.rssm(embed, data['action'], data['is_first'], seed)
        feat = self.rssm.get_feat(post)
        for head in self.heads.values():
            head(feat)
        self.opt.build(self.trainable_variables)
        return feat

    # Data ----------------------------------------------------------------------------------------

    def preprocess(self, obs):
        """uint8 -> [-0.5, 0.5], other numbers -> compute dtype, reward transform and the discount
        target gamma * (1 - terminal) (spec 7.1). `log_` keys are dropped."""
        return preprocess(obs, self.config, self.compute_dtype)

    # Narrow interface for behaviours -------------------------------------------------------------
    # Exploration and the task actor-critic read the model only through these, not through its
    # encoder, heads or RSSM.

    @property
    def stoch_size(self):
        """Size of the flattened stochastic state (latents x classes when discrete)."""
        return self.rssm.stoch_size * (self.rssm.discrete or 1)

    @property
    def deter_size(self):
        return self.rssm.deter_size

    @property
    def feat_size(self):
        return self.rssm.feat_size

    def flat_stoch(self, state):
        """The stochastic state of `state` as [..., stoch_size]."""
        stoch = state['stoch']
        if self.rssm.discrete:
            stoch = tf.reshape(stoch, tf.concat([tf.shape(stoch)[:-2], [-1]], 0))
        return stoch

    def embed(self, data):
        """Encoder embeddings [..., E] of raw model inputs."""
        return self.encoder(self.preprocess(data))

    def reward(self, feat):
        """Predicted reward (the reward head's mode) for features [..., F]."""
        return self.heads['reward'](feat).mode()

    # Training ------------------------------------------------------------------------------------

    def train(self, data, state, seed):
        """One update. Returns (last posterior state, outputs for the actor-critic, metrics)."""
        with tf.GradientTape() as tape:
            loss, state, outputs, metrics = self.loss(data, state, seed)
        metrics.update(self.opt(tape, loss, self.trainable_variables))
        return state, outputs, metrics

    def loss_scale(self, key):
        scales = self.config.loss_scales
        if key in scales:
            return scales[key]
        if key in self.heads['decoder'].mlp_keys:
            return scales['proprio']  # the original never read this scale (spec 17.2)
        return 1.0

    def loss(self, data, state, seed):
        data = self.preprocess(data)
        embed = self.encoder(data)
        post, prior = self.rssm.observe(embed, data['action'], data['is_first'], state, seed)
        kl_loss, kl_value = self.rssm.kl_loss(post, prior, **self.config.kl)
        feat = self.rssm.get_feat(post)
        losses = {'kl': kl_loss}
        likes = {}
        for name, head in self.heads.items():
            out = head(feat if name in self.config.grad_heads else sg(feat))
            for key, dist in (out if isinstance(out, dict) else {name: out}).items():
                like = tf.cast(dist.log_prob(data[key]), tf.float32)
                likes[key] = like
                losses[key] = -tf.reduce_mean(like)
        model_loss = tf.add_n([self.loss_scale(k) * v for k, v in losses.items()])
        last_state = {k: v[:, -1] for k, v in post.items()}
        outputs = dict(embed=embed, feat=feat, post=post, prior=prior, likes=likes, kl=kl_value)
        metrics = {f'{name}_loss': value for name, value in losses.items()}
        metrics['model_kl'] = tf.reduce_mean(kl_value)
        metrics['prior_ent'] = tf.reduce_mean(self.rssm.get_dist(prior).entropy())
        metrics['post_ent'] = tf.reduce_mean(self.rssm.get_dist(post).entropy())
        return model_loss, last_state, outputs, metrics

    # Imagination ---------------------------------------------------------------------------------

    def imagine(self, actor, start, is_terminal, horizon, seed):
        """Rolls out `actor` for `horizon` steps from every start state (spec 9.2).

        Returns a dict of [horizon + 1, N, ...] tensors: the RSSM state keys, `feat`, `action`
        (index 0 is zero; action t led into state t), `discount` and the cumulative `weight`."""
        def flatten(x):
            return tf.reshape(x, tf.concat([[-1], tf.shape(x)[2:]], 0))

        start = {k: flatten(sg(v)) for k, v in start.items()}
        start['feat'] = self.rssm.get_feat(start)
        start['action'] = tf.zeros([tf.shape(start['feat'])[0], self.act_dim], tf.float32)
        seeds = tf.random.experimental.stateless_split(seed, horizon)

        def step(prev, step_seed):
            action_seed, state_seed = split_seed(step_seed, 2)
            action = actor(sg(prev['feat'])).sample(action_seed)
            state = self.rssm.img_step(prev, action, state_seed)
            return {**state, 'feat': self.rssm.get_feat(state), 'action': action}

        rollout = tf.scan(step, seeds, start)
        seq = {k: tf.concat([start[k][None], rollout[k]], 0) for k in start}
        if 'discount' in self.heads:
            disc = self.heads['discount'](seq['feat']).mean()
            # The first state is real: use its true terminal flag instead of the prediction.
            true_first = self.config.discount * (1.0 - tf.cast(flatten(is_terminal), tf.float32))
            disc = tf.concat([true_first[None], disc[1:]], 0)
        else:
            disc = self.config.discount * tf.ones(tf.shape(seq['feat'])[:-1], tf.float32)
        seq['discount'] = disc
        # Weight of step t is the product of the discounts before it (spec 9.2).
        seq['weight'] = tf.math.cumprod(tf.concat([tf.ones_like(disc[:1]), disc[:-1]], 0), 0)
        return seq

    # Report --------------------------------------------------------------------------------------

    def video_pred(self, data, key, seed, context=5, count=6):
        """Open-loop prediction video [T, 3 * H, count * W, C] (spec 7.10): truth, model and error
        rows; the model observes the first `context` steps and imagines the rest."""
        observe_seed, imagine_seed = split_seed(seed, 2)
        data = {k: v[:count] for k, v in data.items()}
        embed = self.encoder(data)
        states, _ = self.rssm.observe(embed[:, :context], data['action'][:, :context],
                                      data['is_first'][:, :context], None, observe_seed)
        decoder = self.heads['decoder']
        recon = decoder(self.rssm.get_feat(states))[key].mode()
        init = {k: v[:, -1] for k, v in states.items()}
        prior = self.rssm.imagine(data['action'][:, context:], init, imagine_seed)
        openl = decoder(self.rssm.get_feat(prior))[key].mode()
        model = tf.concat([recon, openl], 1) + 0.5
        truth = tf.cast(data[key], tf.float32) + 0.5
        error = (model - truth + 1) / 2
        video = tf.concat([truth, model, error], 2)  # [B, T, 3H, W, C]
        shape = tf.shape(video)
        video = tf.transpose(video, [1, 2, 0, 3, 4])  # [T, 3H, B, W, C]
        return tf.reshape(video, [shape[1], shape[2], shape[0] * shape[3], shape[4]])

    def report(self, data, seed):
        data = self.preprocess(data)
        keys = self.heads['decoder'].cnn_keys
        seeds = split_seed(seed, max(len(keys), 1))
        return {f'openl_{k.replace("/", "_")}': self.video_pred(data, k, s)
                for k, s in zip(keys, seeds)}
