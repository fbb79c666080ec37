import keras
import numpy as np
import pytest
import tensorflow as tf

from dreamerv2_tf.agent.optimizer import Optimizer


def linear_loss(var, coeffs):
    """loss = coeffs . var, so the gradient is exactly `coeffs`."""
    return tf.reduce_sum(tf.constant(coeffs, tf.float32) * var)


def step(opt, var, coeffs):
    with tf.GradientTape() as tape:
        loss = linear_loss(var, coeffs)
    return opt(tape, loss, [var])


def test_sgd_clipping_and_decay_by_hand():
    var = keras.Variable(np.array([3.0, 4.0], np.float32), name='w')
    opt = Optimizer('model', lr=1.0, clip=10, wd=0.1, opt='sgd')
    opt.build([var])
    metrics = step(opt, var, [30.0, 40.0])
    # Pre-clip norm 50 is reported; the gradient is clipped to norm 10 -> [6, 8]; the weights are
    # first decayed by (1 - 0.1), independent of the learning rate: [2.7, 3.6] - [6, 8].
    assert float(metrics['model_grad_norm']) == pytest.approx(50.0)
    assert float(metrics['model_loss']) == pytest.approx(3 * 30 + 4 * 40)
    np.testing.assert_allclose(var.numpy(), [-3.3, -4.4], rtol=1e-6)


def test_gradients_below_the_clip_norm_are_not_scaled():
    var = keras.Variable(np.array([1.0, 1.0], np.float32), name='w')
    opt = Optimizer('model', lr=0.5, clip=100, wd=None, opt='sgd')
    opt.build([var])
    step(opt, var, [3.0, 4.0])
    np.testing.assert_allclose(var.numpy(), [1 - 1.5, 1 - 2.0], rtol=1e-6)


def test_adam_two_steps_by_hand():
    lr, eps, wd, b1, b2 = 0.1, 1e-5, 1e-2, 0.9, 0.999
    var = keras.Variable(np.array([1.0, -2.0], np.float32), name='w')
    opt = Optimizer('actor', lr=lr, eps=eps, clip=100, wd=wd, opt='adam')
    opt.build([var])
    expected = np.array([1.0, -2.0])
    m = v = np.zeros(2)
    for t, grad in enumerate([np.array([0.5, -3.0]), np.array([2.0, 1.0])], 1):
        step(opt, var, grad)
        expected = expected * (1 - wd)
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad ** 2
        alpha = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        expected = expected - alpha * m / (np.sqrt(v) + eps)
        np.testing.assert_allclose(var.numpy(), expected, rtol=1e-5)


def test_loss_scaling_skips_a_step_with_an_injected_inf():
    var = keras.Variable(np.array([1.0, 2.0], np.float32), name='w')
    opt = Optimizer('model', lr=0.1, clip=100, wd=1e-2, opt='adam', mixed_precision=True)
    opt.build([var])
    scale = float(opt.opt.dynamic_scale)
    before = var.numpy().copy()
    # The loss is finite, but its gradient times the loss scale overflows to inf.
    metrics = step(opt, var, [3e38, 1.0])
    assert np.isfinite(float(metrics['model_loss']))
    assert not np.isfinite(float(metrics['model_grad_norm']))
    np.testing.assert_array_equal(var.numpy(), before)  # no update and no weight decay
    assert float(opt.opt.dynamic_scale) == scale / 2
    assert int(opt.opt.iterations) == 0
    assert float(metrics['model_loss_scale']) == scale
    # The next finite step is applied.
    step(opt, var, [1.0, 1.0])
    assert not np.allclose(var.numpy(), before)
    assert int(opt.opt.iterations) == 1


def test_non_finite_gradients_fail_loudly_in_float32():
    var = keras.Variable(np.array([1.0], np.float32), name='w')
    opt = Optimizer('critic', lr=0.1, clip=100, wd=1e-6)
    opt.build([var])
    with pytest.raises(tf.errors.InvalidArgumentError, match='critic gradients are not finite'):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.sqrt(var - 1.0))  # d/dx sqrt(x) at 0 is inf
        opt(tape, loss, [var])
