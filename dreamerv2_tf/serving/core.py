"""The deterministic policy core: one policy step whose random draws are inputs, for runtimes
that have no (stateless) random ops, ONNX and LiteRT among them.

    outputs = core(obs..., is_first, deter, stoch, prev_action, latent_noise[, action_noise])
    # -> action, next_deter, next_stoch; the next step's prev_action is the action taken

The core is the eval policy step of `agent.policy.Policy` written with the draws made explicit:

- The posterior latent: discrete latents take `latent_noise`, uniform in (0, 1) of shape
  [B, stoch * classes], and sample by Gumbel-max, one_hot(argmax(logit - log(-log u))), which
  has exactly the categorical distribution; continuous latents take standard normal noise of
  shape [B, stoch] and sample mean + std * noise.
- The action: discrete actions take uniform `action_noise` [B, A] and sample the actor's
  categorical the same way; `normal` and `tanh_normal` actors take standard normal noise
  [B, A]. A `trunc_normal` actor (the default for continuous actions) has no noise input: the
  core returns its mode, the eval action.

Every noise has a value that gives the mode (the deterministic choice): exp(-1) for uniform noise
(then -log(-log u) = 0 adds the same constant to every logit) and 0 for normal noise. So the
eval action (`serving_default`) is the core with mode action noise, the sampled (`sample`) action
the core with random action noise; the latent is sampled in both unless the config sets
`eval_state_mean` (then give it mode noise too).

The recurrent state travels flat: `deter` [B, D], `stoch` [B, stoch * classes] (or [B, stoch]),
`prev_action` [B, A], all float32; zeros start an episode (and `is_first` resets them anyway).
"""

import math

import numpy as np
import tensorflow as tf

SIGNATURE = 'core'
MODE_UNIFORM = math.exp(-1.0)  # uniform noise whose Gumbel draw -log(-log u) is 0
TINY = float(np.finfo(np.float32).tiny)
NEXT_STATE = {'deter': 'next_deter', 'stoch': 'next_stoch', 'prev_action': 'action'}
BELOW_ONE = float(1.0 - np.finfo(np.float32).epsneg)  # the largest float32 below 1


def describe(spec):
    return {'dtype': spec.dtype.name, 'shape': [None if d is None else int(d) for d in spec.shape]}


def gumbel_max(logits, uniform):
    """One-hot argmax(logits - log(-log u)): a categorical sample for u ~ U(0, 1), the mode for
    u = exp(-1). `u` is clipped into (0, 1) so that edge values cannot give infinities."""
    uniform = tf.clip_by_value(uniform, TINY, BELOW_ONE)
    index = tf.argmax(logits - tf.math.log(-tf.math.log(uniform)), -1)
    return tf.one_hot(index, logits.shape[-1], dtype=tf.float32)


class PolicyCore:
    """The core of a float32 `Policy` (encoder, RSSM, eval actor): `specs` are its inputs in
    order, `__call__` maps an input dict to the output dict, and `describe()` is the layout
    metadata that a runtime without TensorFlow needs to drive it."""

    def __init__(self, policy):
        if policy.precision != 32:
            raise ValueError('the portable policy core is float32; export with --precision 32')
        self.policy = policy
        rssm = policy.rssm
        self.discrete_latent = bool(rssm.discrete)
        self.stoch_size = rssm.stoch_size * (rssm.discrete or 1)
        self.deter_size = rssm.deter_size
        space = policy.act_space['action']
        self.discrete_action = bool(space.discrete)
        self.act_dim = int(space.shape[0])
        self.actor = policy.actors['eval']
        self.actor_dist = self.actor.head.dist
        self.action_noise = self.actor_dist in ('onehot', 'normal', 'tanh_normal')
        encoder = policy.encoder
        self.obs_keys = list(encoder.cnn_keys + encoder.mlp_keys)
        specs = {}
        for key in self.obs_keys:
            space_ = policy.obs_space[key]
            specs[key] = tf.TensorSpec([None, *space_.shape], tf.as_dtype(space_.dtype), name=key)
        specs['is_first'] = tf.TensorSpec([None], tf.bool, name='is_first')
        for key, size in self.state_sizes().items():
            specs[key] = tf.TensorSpec([None, size], tf.float32, name=key)
        latent = self.stoch_size if self.discrete_latent else rssm.stoch_size
        specs['latent_noise'] = tf.TensorSpec([None, latent], tf.float32, name='latent_noise')
        if self.action_noise:
            specs['action_noise'] = tf.TensorSpec([None, self.act_dim], tf.float32,
                                                  name='action_noise')
        self.specs = specs

    def state_sizes(self):
        return {'deter': self.deter_size, 'stoch': self.stoch_size, 'prev_action': self.act_dim}

    def __call__(self, inputs):
        policy, rssm = self.policy, self.policy.rssm
        batch = tf.shape(inputs['is_first'])[0]
        keep = 1.0 - tf.cast(inputs['is_first'], tf.float32)[:, None]
        obs = {k: inputs[k] for k in self.obs_keys}
        obs['is_first'] = inputs['is_first']
        embed = policy.encoder(policy.preprocess(obs))
        # RSSM.obs_step's posterior (its prior head is not needed), states zeroed where is_first.
        stoch = inputs['stoch'] * keep
        action = inputs['prev_action'] * keep
        deter = rssm.gru(rssm.img_in(tf.concat([stoch, action], -1)), inputs['deter'] * keep)
        stats = rssm._stats(rssm.obs_dist(rssm.obs_out(tf.concat([deter, embed], -1))))
        if self.discrete_latent:
            shape = [batch, rssm.stoch_size, rssm.discrete]
            noise = tf.reshape(inputs['latent_noise'], shape)
            stoch = tf.reshape(gumbel_max(stats['logit'], noise), [batch, self.stoch_size])
        else:
            stoch = stats['mean'] + stats['std'] * inputs['latent_noise']
        dist = self.actor(tf.concat([stoch, deter], -1))  # RSSM.get_feat's order
        if self.actor_dist == 'onehot':
            action = gumbel_max(dist.logits, inputs['action_noise'])
        elif self.actor_dist == 'normal':
            action = dist.loc + dist.std * inputs['action_noise']
        elif self.actor_dist == 'tanh_normal':
            action = tf.tanh(dist.base.loc + dist.base.std * inputs['action_noise'])
        else:
            action = dist.mode()
        # Output names differ from input names: ONNX names every tensor once.
        return {'action': tf.cast(action, tf.float32), 'next_deter': deter, 'next_stoch': stoch}

    def flat_function(self):
        """The core as a tf.function of positional tensors (the order of `specs`), as
        converters want it."""
        names = list(self.specs)
        return tf.function(lambda *tensors: self(dict(zip(names, tensors))),
                           input_signature=list(self.specs.values()))

    def noise_description(self):
        latent = ({'distribution': 'uniform(0, 1)', 'mode_value': MODE_UNIFORM,
                   'use': 'Gumbel-max: stoch = one_hot(argmax(logit - log(-log u))) per latent '
                          'of `classes`'}
                  if self.discrete_latent else
                  {'distribution': 'normal(0, 1)', 'mode_value': 0.0,
                   'use': 'stoch = mean + std * noise'})
        latent.update(shape=[None, self.specs['latent_noise'].shape[1]],
                      eval='sample' if not self.policy.config.eval_state_mean else 'mode')
        noise = {'latent_noise': latent}
        if self.action_noise:
            action = ({'distribution': 'uniform(0, 1)', 'mode_value': MODE_UNIFORM,
                       'use': 'Gumbel-max over the actor logits'}
                      if self.discrete_action else
                      {'distribution': 'normal(0, 1)', 'mode_value': 0.0,
                       'use': f'{self.actor_dist} reparameterised sample'})
            action.update(shape=[None, self.act_dim], eval='mode', train='sample')
            noise['action_noise'] = action
        return noise

    def describe(self):
        """Everything a runtime needs to drive the core, JSON-serialisable."""
        rssm = self.policy.rssm
        space = self.policy.act_space['action']
        obs = {k: describe(self.specs[k]) for k in self.obs_keys}
        return {
            'signature': SIGNATURE,
            'inputs': {k: describe(v) for k, v in self.specs.items()},
            'outputs': {'action': {'dtype': 'float32', 'shape': [None, self.act_dim]},
                        'next_deter': {'dtype': 'float32', 'shape': [None, self.deter_size]},
                        'next_stoch': {'dtype': 'float32', 'shape': [None, self.stoch_size]}},
            'observation_spec': obs,
            'action_space': {'discrete': bool(space.discrete), 'shape': list(space.shape),
                             'low': space.low.tolist(), 'high': space.high.tolist(),
                             'actor_dist': self.actor_dist},
            'state': {'layout': {k: [None, v] for k, v in self.state_sizes().items()},
                      'initial': 'zeros', 'next': NEXT_STATE,
                      'latents': rssm.stoch_size, 'classes': rssm.discrete or None},
            'noise': self.noise_description(),
        }


def core_metadata(core, config, step):
    """The JSON written beside (and into) each portable export."""
    from dreamerv2_tf import config as configlib
    return {'format': 'dreamerv2_tf policy core', 'version': 1, 'step': int(step),
            'task': config.task, 'seed': int(config.seed),
            'config': configlib.dump_yaml(config.to_dict()), **core.describe()}
