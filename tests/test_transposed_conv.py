import keras
import numpy as np
import pytest
import tensorflow as tf

from dreamerv2_tf.agent import transposed_conv
from dreamerv2_tf.agent.transposed_conv import TransposedConv2D


def numpy_transposed_conv(x, kernel, bias, stride):
    """'valid' transposed convolution by scatter-add: every input pixel adds its kernel-weighted
    copy at stride offsets (kernel is Keras' (kh, kw, out, in))."""
    n, h, w, _ = x.shape
    kh, kw, cout, _ = kernel.shape
    out = np.zeros((n, stride * (h - 1) + kh, stride * (w - 1) + kw, cout))
    for i in range(h):
        for j in range(w):
            out[:, stride * i:stride * i + kh, stride * j:stride * j + kw] += np.einsum(
                'nc,aboc->nabo', x[:, i, j], kernel)
    return out + bias


def layer_pair(filters, kernel_size, strides, in_channels, size, seed=0):
    rng = np.random.default_rng(seed)
    ours = TransposedConv2D(filters, kernel_size, strides, dtype='float32')
    keras_layer = keras.layers.Conv2DTranspose(filters, kernel_size, strides, dtype='float32')
    x = rng.normal(size=(3, size, size, in_channels)).astype(np.float32)
    ours(x), keras_layer(x)
    weights = [rng.normal(size=v.shape).astype(np.float32) * 0.3 for v in ours.weights]
    ours.set_weights(weights)
    keras_layer.set_weights(weights)
    return ours, keras_layer, x, weights


def outputs_and_grads(layer, x, upstream):
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(tf.nn.elu(y) * upstream)  # elu: the forward pass is needed too
    grads = tape.gradient(loss, [x] + layer.trainable_weights)
    return [y] + grads


_original_one_pixel = TransposedConv2D._on_one_pixel


def _one_pixel(layer, x, calls):
    calls.append('matmul')
    return _original_one_pixel(layer, x)


# (filters, kernel, stride, input channels, input size, the form expected)
CASES = [
    (6, 5, 2, 7, 1, 'matmul'),     # the decoder's first layer: a 1x1 input
    (4, 3, 1, 5, 1, 'matmul'),     # any stride on a 1x1 input
    (1, 6, 2, 5, 7, 'phase'),      # the last layer, even kernel, 1 channel (Atari)
    (3, 5, 2, 4, 6, 'phase'),      # odd kernel: zero taps pad it to 6
    (3, (5, 4), 2, 4, 5, 'phase'),  # non-square kernel
    (24, 5, 2, 4, 5, 'keras'),     # many output channels: Keras' own op
    (3, 5, 3, 4, 5, 'keras'),      # stride 3: Keras' own op
]


@pytest.mark.parametrize('filters, kernel, stride, channels, size, form', CASES)
def test_matches_keras_and_a_numpy_scatter_add(filters, kernel, stride, channels, size, form,
                                                monkeypatch):
    ours, keras_layer, x, weights = layer_pair(filters, kernel, stride, channels, size)
    calls = []
    phase = transposed_conv._phase_transposed_conv
    monkeypatch.setattr(transposed_conv, '_phase_transposed_conv',
                        lambda *args: calls.append('phase') or phase(*args))
    monkeypatch.setattr(TransposedConv2D, '_on_one_pixel',
                        lambda self, x: _one_pixel(self, x, calls))

    expected = numpy_transposed_conv(x.astype(np.float64), weights[0], weights[1], stride)
    np.testing.assert_allclose(ours(x).numpy(), expected, rtol=1e-5, atol=1e-5)
    assert (calls[0] if calls else 'keras') == form

    upstream = np.random.default_rng(1).normal(size=expected.shape).astype(np.float32)
    for compiled in (False, True):
        run = tf.function(outputs_and_grads) if compiled else outputs_and_grads
        got = run(ours, x, upstream)
        want = run(keras_layer, x, upstream)
        for a, b in zip(got, want):  # output, d input, d kernel, d bias
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)


def test_same_variables_as_keras_so_checkpoints_interchange():
    ours, keras_layer, _, _ = layer_pair(6, 5, 2, 7, 1)
    assert [(v.name, v.shape) for v in ours.weights] == \
        [(v.name, v.shape) for v in keras_layer.weights]


def test_mixed_precision_follows_the_policy():
    rng = np.random.default_rng(0)
    ours = TransposedConv2D(3, 6, 2, dtype='mixed_float16')
    reference = TransposedConv2D(3, 6, 2, dtype='float32')
    x = rng.normal(size=(2, 4, 4, 5)).astype(np.float32)
    ours(x), reference(x)
    reference.set_weights(ours.get_weights())
    y = ours(x)
    assert y.dtype == tf.float16 and ours.kernel.dtype == 'float32'
    np.testing.assert_allclose(y.numpy(), reference(x).numpy(), rtol=2e-2, atol=2e-2)
