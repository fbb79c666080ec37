"""Optimizer of spec section 10: Adam (or another Keras optimizer), gradient clipping by global norm
with the pre-clip norm reported, decoupled multiplicative weight decay, and dynamic loss scaling
under mixed precision that skips steps with non-finite gradients.

Weight decay multiplies each matching variable by (1 - wd) before the step, independent of the
learning rate, like the original; unlike the original (spec 17.14) a skipped step decays nothing.

On many replicas (inside `strategy.run`) each replica's gradient of its batch-mean loss is
all-reduced once to the mean over replicas, which is the gradient of the global-batch mean; the
norm, the finite check, clipping and loss scaling then see identical values on every replica, and
the step (or the skip) is applied once in cross-replica context. Keras' own `apply` is not used
there: it clips each replica's local gradients before summing them.
"""

import re

import keras
import tensorflow as tf

from dreamerv2_tf.agent import choices
from dreamerv2_tf.agent import replicas

MIXED_FLOAT16 = 'mixed_float16'


def is_mixed(dtype):
    """Whether a dtype policy name computes in float16 (and so needs loss scaling)."""
    return dtype == MIXED_FLOAT16


# `opt` config value -> Keras optimizer factory (epsilon and the shared kwargs).
OPTIMIZERS = choices.implements(choices.OPTIMIZERS, {
    'adam': lambda eps, **kw: keras.optimizers.Adam(epsilon=eps, **kw),
    'nadam': lambda eps, **kw: keras.optimizers.Nadam(epsilon=eps, **kw),
    'adamax': lambda eps, **kw: keras.optimizers.Adamax(epsilon=eps, **kw),
    'sgd': lambda eps, **kw: keras.optimizers.SGD(**kw),
    'momentum': lambda eps, **kw: keras.optimizers.SGD(momentum=0.9, **kw),
})


class Optimizer:

    def __init__(self, name, lr, eps=1e-4, clip=None, wd=None, opt='adam', wd_pattern=r'.*',
                 mixed_precision=False):
        if wd is not None and not 0 <= wd < 1:
            raise ValueError(f'{name} optimizer: weight decay must be in [0, 1), got {wd}')
        if clip is not None and clip and clip < 1:
            raise ValueError(f'{name} optimizer: clip must be >= 1, got {clip}')
        self.name = name
        self.wd = wd
        self.wd_pattern = re.compile(wd_pattern)
        self.mixed_precision = mixed_precision
        self.clip = clip or None
        kwargs = dict(learning_rate=lr, global_clipnorm=clip or None, name=f'{name}_opt')
        if opt not in OPTIMIZERS:
            raise ValueError(f"{name} optimizer: unknown opt '{opt}'; use one of "
                             f"{', '.join(OPTIMIZERS)}")
        inner = OPTIMIZERS[opt](eps, **kwargs)
        # Keras' LossScaleOptimizer defaults match the original: scale 2^15, doubled after 2000
        # finite steps, halved and the step skipped on non-finite gradients.
        self.opt = keras.optimizers.LossScaleOptimizer(inner) if mixed_precision else inner

    def build(self, variables):
        """Creates the slot variables; must run eagerly before the train step is traced."""
        self.opt.build(list(variables))
        self._decayed = [v for v in variables if self.wd and self.wd_pattern.match(
            f'{self.name}/{v.path}')]

    @property
    def variables(self):
        """Optimizer state (iterations, moments, loss scale) for checkpoints."""
        return self.opt.variables

    def __call__(self, tape, loss, variables):
        """One update of `variables` from `loss` recorded on `tape`; returns metrics."""
        if loss.dtype != tf.float32 or loss.shape.rank != 0:
            raise ValueError(f'{self.name} loss must be a float32 scalar, got {loss.dtype} '
                             f'{loss.shape}')
        # The tape is closed by now, so differentiate the recorded `loss` itself; the loss scale
        # enters as the output gradient (d(scale * loss) = scale * d(loss)).
        metrics = {f'{self.name}_loss': tf.debugging.check_numerics(loss, f'{self.name} loss')}
        scale = tf.cast(self.opt.dynamic_scale, tf.float32) if self.mixed_precision else None
        grads = tape.gradient(loss, variables, output_gradients=scale)
        missing = [v.path for v, g in zip(variables, grads) if g is None]
        if missing:
            raise ValueError(f'{self.name} loss does not depend on {missing[:3]}')
        if replicas.replica_context() is not None:
            return self._apply_replicated(grads, variables, scale, metrics)
        unscaled = grads
        if self.mixed_precision:
            unscaled = [tf.cast(g, tf.float32) / scale for g in grads]
            metrics[f'{self.name}_loss_scale'] = scale
        norm = tf.linalg.global_norm(unscaled)
        metrics[f'{self.name}_grad_norm'] = norm
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in unscaled])
        if not self.mixed_precision:
            # Without loss scaling a non-finite gradient is a bug, not an overflow to skip.
            tf.debugging.assert_equal(finite, True, f'{self.name} gradients are not finite')
        else:
            # 1 when the loss-scale optimizer skips this step (the training loop sums these).
            metrics[f'{self.name}_skipped_steps'] = tf.cast(tf.logical_not(finite), tf.float32)
        if self._decayed:
            decay = tf.where(finite, 1.0 - self.wd, 1.0)
            for var in self._decayed:
                var.assign(var * tf.cast(decay, var.dtype))
        # The inner optimizer clips the unscaled gradients to `clip`; the loss-scale optimizer
        # unscales first and skips non-finite steps.
        self.opt.apply(grads, variables)
        return metrics

    # Many replicas -------------------------------------------------------------------------------

    def _apply_replicated(self, grads, variables, scale, metrics):
        """The step of `__call__` inside `strategy.run`: one all-reduce, then identical values."""
        grads = replicas.mean([tf.cast(g, tf.float32) for g in grads])
        unscaled = [g / scale for g in grads] if self.mixed_precision else grads
        if self.mixed_precision:
            metrics[f'{self.name}_loss_scale'] = scale
        norm = tf.linalg.global_norm(unscaled)
        metrics[f'{self.name}_grad_norm'] = norm
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in unscaled])
        if not self.mixed_precision:
            tf.debugging.assert_equal(finite, True, f'{self.name} gradients are not finite')
        if self.clip:
            # Keras' global-norm clipping formula, on the global gradient.
            factor = self.clip * tf.minimum(1.0 / norm, 1.0 / self.clip)
            unscaled = [g * (factor + (norm - norm)) for g in unscaled]
        # Per-replica gradients go into the merge (not the first replica's copy), so that each
        # device updates its variables from its own identical copy instead of receiving one.
        replicas.replica_context().merge_call(
            lambda strategy, finite, *grads: self._step_cross_replica(
                strategy, strategy.experimental_local_results(finite)[0], grads, variables),
            args=(finite, *unscaled))
        return metrics

    def _step_cross_replica(self, strategy, finite, grads, variables):
        """Weight decay, the inner optimizer's update of every variable on every device and the
        loss-scale bookkeeping of Keras' LossScaleOptimizer; a non-finite step only halves the
        scale. Runs once, in cross-replica context."""
        inner = self.opt.inner_optimizer if self.mixed_precision else self.opt
        decay = 1.0 - (self.wd or 0.0)

        def step():
            for var in self._decayed:
                strategy.extended.update(var.value, lambda v: v.assign(v * tf.cast(decay, v.dtype)),
                                         group=False)
            rate = inner.learning_rate
            for grad, var in zip(grads, variables):
                strategy.extended.update(
                    var.value, lambda v, g: inner.update_step(g, v, rate), args=(grad,),
                    group=False)
            inner.iterations.assign_add(1)
            if self.mixed_precision:
                grow = tf.equal(self.opt.step_counter, self.opt.dynamic_growth_steps - 1)
                tf.cond(grow, lambda: self._rescale(2.0), self._count)
            return tf.constant(True)

        def skip():
            if self.mixed_precision:
                self._rescale(0.5)
            return tf.constant(False)

        tf.cond(finite, step, skip)

    def _rescale(self, factor):
        self.opt.step_counter.assign(0)
        self.opt.dynamic_scale.assign(self.opt.dynamic_scale * factor)
        return tf.no_op()

    def _count(self):
        self.opt.step_counter.assign_add(1)
        return tf.no_op()
