"""Keras 3 networks of DreamerV2 (spec section 7): encoder, decoder, RSSM with its GRU cell, and MLP
heads that output distributions.

Every layer receives an explicit dtype policy (`float32` or `mixed_float16`) instead of relying on
Keras' global policy, so both precisions can live in one process, and an explicit name, so that
variable paths (`world_model/rssm/gru/dense/kernel`) are stable checkpoint keys. Distribution
parameters are cast to float32 before a distribution is built.
"""

import re

import keras
import numpy as np
import tensorflow as tf

from dreamerv2_tf import protocol
from dreamerv2_tf.agent import choices
from dreamerv2_tf.agent import distributions as dists
from dreamerv2_tf.agent import replicas
from dreamerv2_tf.agent.transposed_conv import TransposedConv2D
from dreamerv2_tf.agent.distributions import split_seed

sg = tf.stop_gradient

ACTIVATIONS = choices.implements(choices.ACTIVATIONS, {
    'none': tf.identity,
    'elu': tf.nn.elu,
    'relu': tf.nn.relu,
    'tanh': tf.tanh,
    'sigmoid': tf.sigmoid,
    'swish': tf.nn.silu,
    'silu': tf.nn.silu,
    'gelu': tf.nn.gelu,
    'leaky_relu': tf.nn.leaky_relu,
    'mish': lambda x: x * tf.tanh(tf.nn.softplus(x)),
})


def get_act(name):
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation '{name}'; use one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class LazyBuild:
    """Mixin: sublayers build themselves on the first call (their input sizes are only known
    then), so the container has nothing to build; this stops Keras warning about it."""

    def build(self, *args, **kwargs):
        self.built = True


def select_keys(space, cnn_pattern, mlp_pattern):
    """Observation keys for the CNN (rank-3, matching `cnn_pattern`) and the MLP (rank-1, matching
    `mlp_pattern`); patterns match at the start of the key. `log_` keys never reach a network."""
    keys = [k for k in space if protocol.is_model_input(k)]
    cnn = [k for k in keys if re.match(cnn_pattern, k) and len(space[k].shape) == 3]
    mlp = [k for k in keys if re.match(mlp_pattern, k) and len(space[k].shape) == 1]
    return cnn, mlp


class DenseBlock(LazyBuild, keras.layers.Layer):
    """Dense -> optional LayerNorm -> activation."""

    def __init__(self, units, act='elu', norm='none', **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(units, name='dense', dtype=self.dtype_policy)
        self.norm = _norm_layer(norm, self.dtype_policy)
        self.act = get_act(act)

    def call(self, x):
        x = self.dense(x)
        if self.norm is not None:
            x = self.norm(x)
        return self.act(x)


NORMS = choices.implements(choices.NORMS, {
    'none': lambda dtype, name: None,
    'layer': lambda dtype, name: keras.layers.LayerNormalization(epsilon=1e-3, name=name,
                                                                 dtype=dtype),
})

# Std activations of continuous RSSM latents (before adding min_std).
STD_ACTS = choices.implements(choices.STD_ACTS, {
    'softplus': tf.nn.softplus,
    'sigmoid': tf.sigmoid,
    'sigmoid2': lambda s: 2 * tf.sigmoid(s / 2),
})


def _norm_layer(norm, dtype, name='norm'):
    if norm not in NORMS:
        raise ValueError(f"unknown norm '{norm}'; use one of {', '.join(NORMS)}")
    return NORMS[norm](dtype, name)


class DistLayer(LazyBuild, keras.layers.Layer):
    """Maps features to a distribution over a tensor of `shape` (spec 7.6)."""

    STD_DISTS = ('normal', 'tanh_normal', 'trunc_normal')

    def __init__(self, shape, dist='mse', min_std=0.1, init_std=0.0, **kwargs):
        super().__init__(**kwargs)
        self.event_shape = tuple(shape)
        self.dist = dist
        self.min_std = min_std
        self.init_std = init_std
        if dist not in HEAD_DISTS:
            raise ValueError(f"unknown distribution '{dist}'; use one of {', '.join(HEAD_DISTS)}")
        size = int(np.prod(self.event_shape))
        self.out = keras.layers.Dense(size, name='out', dtype=self.dtype_policy)
        if dist in self.STD_DISTS:
            self.std = keras.layers.Dense(size, name='std', dtype=self.dtype_policy)

    def _reshape(self, x, features):
        shape = tf.concat([tf.shape(features)[:-1], self.event_shape], 0)
        return tf.cast(tf.reshape(x, shape), tf.float32)

    def call(self, features):
        out = self._reshape(self.out(features), features)
        std = None
        if self.dist in self.STD_DISTS:
            std = self._reshape(self.std(features), features)
        return HEAD_DISTS[self.dist](self, out, std, len(self.event_shape))


def _normal(layer, out, std, event_dims):
    # The original used the raw output as std (spec 17.15); keep it positive instead.
    return dists.Normal(out, tf.nn.softplus(std) + layer.min_std, event_dims)


def _tanh_normal(layer, out, std, event_dims):
    std = tf.nn.softplus(std + layer.init_std) + layer.min_std
    return dists.TanhNormal(5 * tf.tanh(out / 5), std, event_dims)


def _trunc_normal(layer, out, std, event_dims):
    std = 2 * tf.sigmoid((std + layer.init_std) / 2) + layer.min_std
    return dists.TruncNormal(tf.tanh(out), std, -1.0, 1.0, event_dims=event_dims)


# `dist` config value -> distribution from (layer, float32 output, float32 std output or None,
# event dims). The onehot's class axis is one of the event axes.
HEAD_DISTS = choices.implements(choices.HEAD_DISTS, {
    'mse': lambda layer, out, std, event_dims: dists.MSE(out, event_dims),
    'binary': lambda layer, out, std, event_dims: dists.Bernoulli(out, event_dims),
    'onehot': lambda layer, out, std, event_dims: dists.OneHot(out, max(event_dims - 1, 0)),
    'normal': _normal,
    'tanh_normal': _tanh_normal,
    'trunc_normal': _trunc_normal,
})


class MLP(LazyBuild, keras.Model):
    """`layers` x (Dense -> norm -> act) then a `DistLayer`; reward, discount, critic, actor heads."""

    def __init__(self, shape, layers, units, act='elu', norm='none', dist='mse', min_std=0.1,
                 init_std=0.0, **kwargs):
        super().__init__(**kwargs)
        self.hidden = [DenseBlock(units, act, norm, name=f'dense{i}', dtype=self.dtype_policy)
                       for i in range(layers)]
        self.head = DistLayer(shape, dist, min_std, init_std, name='head', dtype=self.dtype_policy)

    def call(self, features):
        x = tf.cast(features, self.compute_dtype)
        for layer in self.hidden:
            x = layer(x)
        return self.head(x)


class GRUCell(LazyBuild, keras.layers.Layer):
    """Layer-normalised GRU of DreamerV2 (spec 7.7): one Dense over [input, state] with bias, layer
    norm in float32 over all three gates, gate order (reset, candidate, update), update bias -1."""

    def __init__(self, size, act='tanh', update_bias=-1.0, **kwargs):
        super().__init__(**kwargs)
        self.size = size
        self.act = get_act(act)
        self.update_bias = update_bias
        self.dense = keras.layers.Dense(3 * size, name='dense', dtype=self.dtype_policy)
        self.norm = keras.layers.LayerNormalization(epsilon=1e-3, name='norm', dtype='float32')

    def call(self, inputs, state):
        parts = self.dense(tf.concat([inputs, state], -1))
        parts = tf.cast(self.norm(tf.cast(parts, tf.float32)), self.compute_dtype)
        reset, cand, update = tf.split(parts, 3, -1)
        reset = tf.sigmoid(reset)
        cand = self.act(reset * cand)
        update = tf.sigmoid(update + self.update_bias)
        return update * cand + (1 - update) * state


def _time_major(x):
    return tf.transpose(x, [1, 0] + list(range(2, x.shape.rank)))


class RSSM(LazyBuild, keras.Model):
    """Recurrent state-space model (spec 7.8) with discrete (stoch x discrete one-hot) or continuous
    (Gaussian) latents and an ensemble of prior heads.

    States are dicts of compute-dtype tensors: `deter`, `stoch` and `logit` (discrete) or `mean`
    and `std` (continuous). Calling the model runs `observe`."""

    def __init__(self, ensemble=1, hidden=1024, deter=1024, stoch=32, discrete=32, act='elu',
                 norm='none', std_act='sigmoid2', min_std=0.1, **kwargs):
        super().__init__(**kwargs)
        self.ensemble = ensemble
        self.deter_size = deter
        self.stoch_size = stoch
        self.discrete = discrete
        self.std_act = std_act
        self.min_std = min_std
        dtype = self.dtype_policy
        stats = stoch * discrete if discrete else 2 * stoch
        self.img_in = DenseBlock(hidden, act, norm, name='img_in', dtype=dtype)
        self.gru = GRUCell(deter, name='gru', dtype=dtype)
        self.img_out = [DenseBlock(hidden, act, norm, name=f'img_out_{k}', dtype=dtype)
                        for k in range(ensemble)]
        self.img_dist = [keras.layers.Dense(stats, name=f'img_dist_{k}', dtype=dtype)
                         for k in range(ensemble)]
        self.obs_out = DenseBlock(hidden, act, norm, name='obs_out', dtype=dtype)
        self.obs_dist = keras.layers.Dense(stats, name='obs_dist', dtype=dtype)

    # State ---------------------------------------------------------------------------------------

    def initial(self, batch_size):
        dtype = self.compute_dtype
        state = {'deter': tf.zeros([batch_size, self.deter_size], dtype)}
        if self.discrete:
            shape = [batch_size, self.stoch_size, self.discrete]
            state.update(logit=tf.zeros(shape, dtype), stoch=tf.zeros(shape, dtype))
        else:
            shape = [batch_size, self.stoch_size]
            state.update(mean=tf.zeros(shape, dtype), std=tf.zeros(shape, dtype),
                         stoch=tf.zeros(shape, dtype))
        return state

    @property
    def feat_size(self):
        return self.stoch_size * (self.discrete or 1) + self.deter_size

    def get_feat(self, state):
        stoch = state['stoch']
        if self.discrete:
            stoch = tf.reshape(stoch, tf.concat([tf.shape(stoch)[:-2], [-1]], 0))
            stoch.set_shape(state['stoch'].shape[:-2].concatenate([self.stoch_size * self.discrete]))
        return tf.concat([tf.cast(stoch, self.compute_dtype), state['deter']], -1)

    def get_dist(self, state):
        if self.discrete:
            return dists.OneHot(tf.cast(state['logit'], tf.float32), event_dims=1)
        return dists.Normal(tf.cast(state['mean'], tf.float32), tf.cast(state['std'], tf.float32), 1)

    def _stats(self, x):
        x = tf.cast(x, tf.float32)
        if self.discrete:
            shape = tf.concat([tf.shape(x)[:-1], [self.stoch_size, self.discrete]], 0)
            return {'logit': tf.reshape(x, shape)}
        mean, std = tf.split(x, 2, -1)
        std = STD_ACTS[self.std_act](std) + self.min_std
        return {'mean': mean, 'std': std}

    def _latent(self, stats, seed, sample):
        dist = self.get_dist(stats)
        stoch = dist.sample(seed) if sample else dist.mode()
        state = {'stoch': stoch, **stats}
        return {k: tf.cast(v, self.compute_dtype) for k, v in state.items()}

    # Steps ---------------------------------------------------------------------------------------

    def img_step(self, prev_state, prev_action, seed, sample=True):
        """Prior: the next state from the previous state and action."""
        deter = self._deter_step(prev_state, prev_action)
        member_seed, sample_seed = split_seed(seed, 2)
        stats = self.prior_stats(deter, member_seed)
        return {'deter': deter, **self._latent(stats, sample_seed, sample)}

    def obs_step(self, prev_state, prev_action, embed, is_first, seed, sample=True):
        """Posterior of one step; states and actions are zeroed where `is_first`. The prior of
        the step is `prior_stats(post['deter'], ...)`: nothing in the recurrence reads it."""
        keep = 1 - tf.cast(is_first, self.compute_dtype)

        def mask(x):
            return x * tf.reshape(tf.cast(keep, x.dtype), [-1] + [1] * (x.shape.rank - 1))

        prev_state = {k: mask(v) for k, v in prev_state.items()}
        _, post_seed = split_seed(seed, 2)  # the first seed is the prior's (img_step's)
        deter = self._deter_step(prev_state, mask(tf.cast(prev_action, self.compute_dtype)))
        x = self.obs_out(tf.concat([deter, tf.cast(embed, self.compute_dtype)], -1))
        return {'deter': deter, **self._latent(self._stats(self.obs_dist(x)), post_seed, sample)}

    def _deter_step(self, prev_state, prev_action):
        """The GRU step shared by prior and posterior: the next deterministic state."""
        prev_stoch = prev_state['stoch']
        if self.discrete:
            prev_stoch = tf.reshape(prev_stoch, [-1, self.stoch_size * self.discrete])
        x = tf.concat([tf.cast(prev_stoch, self.compute_dtype),
                       tf.cast(prev_action, self.compute_dtype)], -1)
        return self.gru(self.img_in(x), prev_state['deter'])

    def prior_stats(self, deter, member_seed):
        """Distribution stats of the prior at `deter` [..., deter]; with an ensemble, of one
        member drawn from `member_seed` (one per call, as the original; `member_seed` may carry
        leading dims [T, 2] matching deter's second axis [B, T, ...], one draw per step; unused
        without an ensemble)."""
        stats = [self._stats(dist(out(deter))) for out, dist in zip(self.img_out, self.img_dist)]
        if self.ensemble == 1:
            return stats[0]
        draw = lambda s: tf.random.stateless_uniform([], s, 0, self.ensemble, tf.int32)  # noqa
        if member_seed.shape.rank == 1:
            index = draw(member_seed)
            return {k: tf.gather(tf.stack([s[k] for s in stats]), index) for k in stats[0]}
        index = tf.map_fn(draw, member_seed, fn_output_signature=tf.int32)  # [T]
        choice = tf.one_hot(index, self.ensemble, dtype=tf.float32)  # [T, E]
        return {k: tf.einsum('te,ebt...->bt...', choice, tf.stack([s[k] for s in stats]))
                for k in stats[0]}

    # Sequences -----------------------------------------------------------------------------------

    def observe(self, embed, action, is_first, state=None, seed=None, sample=True):
        """Posterior and prior states [B, T, ...] for embeddings and the actions that led into each
        step. The posterior runs as a `tf.scan` (the graph does not grow with the sequence
        length); the prior heads, outside the recurrence, then run once on all steps. The prior
        holds `deter` and its distribution stats, no sample (nothing reads one)."""
        if state is None:
            state = self.initial(tf.shape(embed)[0])
        seeds = tf.random.experimental.stateless_split(seed, tf.shape(embed)[1])

        def step(post, inputs):
            step_embed, step_action, step_first, step_seed = inputs
            return self.obs_step(post, step_action, step_embed, step_first, step_seed, sample)

        inputs = (_time_major(embed), _time_major(action), _time_major(is_first), seeds)
        post = {k: _time_major(v) for k, v in tf.scan(step, inputs, state).items()}
        member_seeds = None
        if self.ensemble > 1:  # step t's prior seed, then its member seed, as img_step splits
            member_seeds = tf.map_fn(lambda s: split_seed(split_seed(s, 2)[0], 2)[0], seeds)
        stats = self.prior_stats(post['deter'], member_seeds)
        prior = {'deter': post['deter'],
                 **{k: tf.cast(v, self.compute_dtype) for k, v in stats.items()}}
        return post, prior

    def imagine(self, action, state, seed, sample=True):
        """Prior states [B, T, ...] rolled out from `state` with the given actions [B, T, A]."""
        seeds = tf.random.experimental.stateless_split(seed, tf.shape(action)[1])

        def step(prev, inputs):
            step_action, step_seed = inputs
            return self.img_step(prev, step_action, step_seed, sample)

        prior = tf.scan(step, (_time_major(action), seeds), state)
        return {k: _time_major(v) for k, v in prior.items()}

    def call(self, embed, action, is_first, seed):
        return self.observe(embed, action, is_first, None, seed)

    def kl_loss(self, post, prior, forward=False, balance=0.8, free=0.0, free_avg=True):
        """KL balancing with free nats (spec 7.8). Returns (loss, KL(post || prior) per step)."""
        def kl(lhs, rhs):
            return self.get_dist(lhs).kl(self.get_dist(rhs))

        def stop(state):
            return {k: sg(v) for k, v in state.items()}

        lhs, rhs = (prior, post) if forward else (post, prior)
        mix = balance if forward else 1 - balance
        if balance == 0.5:
            value = kl(lhs, rhs)
            return tf.reduce_mean(tf.maximum(value, free)), value
        value_lhs = value = kl(lhs, stop(rhs))
        value_rhs = kl(stop(lhs), rhs)
        if free_avg:
            # Free nats of the batch mean: of the global batch when running on many replicas.
            loss_lhs = replicas.mean_at_least(value_lhs, free)
            loss_rhs = replicas.mean_at_least(value_rhs, free)
        else:
            loss_lhs = tf.reduce_mean(tf.maximum(value_lhs, free))
            loss_rhs = tf.reduce_mean(tf.maximum(value_rhs, free))
        return mix * loss_lhs + (1 - mix) * loss_rhs, value


class Encoder(LazyBuild, keras.Model):
    """Images through 4 strided convolutions, vectors through an MLP; outputs are concatenated
    (spec 7.3). Leading batch dimensions are kept."""

    def __init__(self, obs_space, cnn_keys='.*', mlp_keys='.*', act='elu', norm='none',
                 cnn_depth=48, cnn_kernels=(4, 4, 4, 4), mlp_layers=(400, 400, 400, 400),
                 **kwargs):
        super().__init__(**kwargs)
        self.cnn_keys, self.mlp_keys = select_keys(obs_space, cnn_keys, mlp_keys)
        if not self.cnn_keys and not self.mlp_keys:
            raise ValueError(f'the encoder selects no observation key of {list(obs_space)}; check '
                             f"encoder.cnn_keys '{cnn_keys}' and encoder.mlp_keys '{mlp_keys}'")
        dtype = self.dtype_policy
        self.act = get_act(act)
        self.convs = [keras.layers.Conv2D(2 ** i * cnn_depth, kernel, 2, name=f'conv{i}',
                                          dtype=dtype) for i, kernel in enumerate(cnn_kernels)]
        self.conv_norms = [_norm_layer(norm, dtype, f'norm{i}') for i in range(len(cnn_kernels))]
        self.mlp = [DenseBlock(units, act, norm, name=f'dense{i}', dtype=dtype)
                    for i, units in enumerate(mlp_layers)]

    def call(self, obs):
        outputs = []
        if self.cnn_keys:
            x = tf.concat([tf.cast(obs[k], self.compute_dtype) for k in self.cnn_keys], -1)
            batch_shape = tf.shape(x)[:-3]
            x = tf.reshape(x, tf.concat([[-1], tf.shape(x)[-3:]], 0))
            for conv, norm in zip(self.convs, self.conv_norms):
                x = conv(x)
                x = self.act(norm(x) if norm is not None else x)
            size = int(np.prod(x.shape[1:]))
            outputs.append(tf.reshape(x, tf.concat([batch_shape, [size]], 0)))
        if self.mlp_keys:
            x = tf.concat([tf.cast(obs[k], self.compute_dtype) for k in self.mlp_keys], -1)
            for layer in self.mlp:
                x = layer(x)
            outputs.append(x)
        return tf.concat(outputs, -1)


class Decoder(LazyBuild, keras.Model):
    """Reconstructs observations from features (spec 7.4): transposed convolutions for images,
    an MLP with one `mse` output per vector key. Returns {key: distribution}, images as
    `mse` over (H, W, C) in the preprocessed pixel range [-0.5, 0.5]."""

    def __init__(self, obs_space, cnn_keys='.*', mlp_keys='.*', act='elu', norm='none',
                 cnn_depth=48, cnn_kernels=(5, 5, 6, 6), mlp_layers=(400, 400, 400, 400),
                 **kwargs):
        super().__init__(**kwargs)
        self.cnn_keys, self.mlp_keys = select_keys(obs_space, cnn_keys, mlp_keys)
        self.shapes = {k: tuple(obs_space[k].shape) for k in self.cnn_keys + self.mlp_keys}
        dtype = self.dtype_policy
        self.act = get_act(act)
        self.cnn_depth = cnn_depth
        if self.cnn_keys:
            channels = sum(self.shapes[k][-1] for k in self.cnn_keys)
            self.cnn_in = keras.layers.Dense(32 * cnn_depth, name='cnn_in', dtype=dtype)
            last = len(cnn_kernels) - 1
            self.deconvs = [
                TransposedConv2D(
                    channels if i == last else 2 ** (len(cnn_kernels) - i - 2) * cnn_depth,
                    kernel, 2, name=f'deconv{i}', dtype=dtype)
                for i, kernel in enumerate(cnn_kernels)]
            self.deconv_norms = [_norm_layer(norm, dtype, f'norm{i}')
                                 for i in range(len(cnn_kernels) - 1)]
        self.mlp = [DenseBlock(units, act, norm, name=f'dense{i}', dtype=dtype)
                    for i, units in enumerate(mlp_layers)] if self.mlp_keys else []
        self.mlp_heads = {k: DistLayer(self.shapes[k], 'mse', name=f'head_{k}', dtype=dtype)
                          for k in self.mlp_keys}

    def call(self, features):
        features = tf.cast(features, self.compute_dtype)
        result = {}
        if self.cnn_keys:
            batch_shape = tf.shape(features)[:-1]
            x = self.cnn_in(features)
            x = tf.reshape(x, [-1, 1, 1, 32 * self.cnn_depth])
            for i, deconv in enumerate(self.deconvs):
                x = deconv(x)
                if i < len(self.deconv_norms):
                    norm = self.deconv_norms[i]
                    x = self.act(norm(x) if norm is not None else x)
            x = tf.reshape(x, tf.concat([batch_shape, tf.shape(x)[1:]], 0))
            sizes = [self.shapes[k][-1] for k in self.cnn_keys]
            for key, mean in zip(self.cnn_keys, tf.split(x, sizes, -1)):
                # The original kept this likelihood in float16 (spec 17.20); float32 here.
                result[key] = dists.MSE(tf.cast(mean, tf.float32), event_dims=3)
        if self.mlp_keys:
            x = features
            for layer in self.mlp:
                x = layer(x)
            for key, head in self.mlp_heads.items():
                result[key] = head(x)
        return result
