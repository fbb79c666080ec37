"""A transposed convolution with Keras' `Conv2DTranspose` weights and outputs, computed in forms
that TensorFlow's CPU kernels run faster.

TensorFlow runs a transposed convolution as `Conv2DBackpropInput`, which is slow in two of the
decoder's four layers (batch 800, forward and backward, measured on a 2-core AMD EPYC, TF 2.21
with oneDNN): on the 1x1 input of the first layer it ran at about a tenth of the float32 matmul
peak (0.78 s, against 0.11 s as a matmul), and with the last layer's 1 or 3 output channels its
forward pass took 0.14 s, against 0.05 s as a stride-1 convolution over the output's 2x2 phases.
Other layers keep TensorFlow's op: there the two forms were equally fast or the phase form
slower (it computes the zero-padded border too, 2.8x the work on a 5x5 input).

Only the summation order differs from `Conv2DTranspose` (tests compare outputs and gradients).
"""

import keras
import tensorflow as tf

# Output channels below which the phase form runs the forward pass (1 and 3 gained 1.9-2.2x,
# 48 gained nothing).
PHASE_MAX_CHANNELS = 16


class TransposedConv2D(keras.layers.Conv2DTranspose):
    """`keras.layers.Conv2DTranspose` (same variables, so checkpoints are interchangeable) with
    'valid' padding: a matmul on a 1x1 input; for few output channels and stride 2, the
    forward pass as a stride-1 convolution over 2x2 output phases, with the transposed
    convolution's own gradient. Anything else runs Keras' layer unchanged."""

    def call(self, inputs):
        form = self._form(inputs.shape)
        if form == 'keras':
            return super().call(inputs)
        if form == 'matmul':
            outputs = self._on_one_pixel(inputs)
        else:
            outputs = _phase_transposed_conv(inputs, tf.convert_to_tensor(self.kernel))
        if self.use_bias:
            outputs = outputs + self.bias
        return self.activation(outputs) if self.activation is not None else outputs

    def _form(self, shape):
        """'matmul', 'phase' or 'keras': how inputs of this static shape are computed."""
        simple = (self.padding == 'valid' and self.data_format == 'channels_last'
                  and tuple(self.dilation_rate) == (1, 1))
        if not simple or shape[1] is None or shape[2] is None:
            return 'keras'
        if (shape[1], shape[2]) == (1, 1):
            return 'matmul'
        if tuple(self.strides) == (2, 2) and self.filters < PHASE_MAX_CHANNELS:
            return 'phase'
        return 'keras'

    def _on_one_pixel(self, inputs):
        # out[i, j, o] = sum_c x[c] * kernel[i, j, o, c]: one matmul, whatever the stride.
        kernel = self.kernel
        kh, kw, cout, cin = kernel.shape
        matrix = tf.reshape(tf.transpose(kernel, [3, 0, 1, 2]), [cin, kh * kw * cout])
        outputs = tf.matmul(tf.reshape(inputs, [-1, cin]), matrix)
        return tf.reshape(outputs, [-1, kh, kw, cout])


def phase_kernel(kernel):
    """(kh, kw, cout, cin) transposed-convolution kernel -> (qh, qw, cin, 4 * cout) kernel of the
    stride-1 convolution that yields the 2x2 output phases of the stride-2 one (channels ordered
    row phase, column phase, output channel); odd kernel sizes are padded with zero taps."""
    kh, kw, cout, cin = kernel.shape
    qh, qw = (kh + 1) // 2, (kw + 1) // 2
    kernel = tf.pad(kernel, [[0, 2 * qh - kh], [0, 2 * qw - kw], [0, 0], [0, 0]])
    # Tap a = 2 * t + p reaches output row 2 * (i + t) + p from input row i; a convolution
    # correlates, so the taps t run backwards.
    kernel = tf.reverse(tf.reshape(kernel, [qh, 2, qw, 2, cout, cin]), [0, 2])
    kernel = tf.transpose(kernel, [0, 2, 5, 1, 3, 4])
    return tf.reshape(kernel, [qh, qw, cin, 4 * cout])


@tf.custom_gradient
def _phase_transposed_conv(inputs, kernel):
    """Stride-2 'valid' transposed convolution without bias, forward pass in phase form."""
    kh, kw, cout, _ = kernel.shape
    height, width = inputs.shape[1], inputs.shape[2]
    qh, qw = (kh + 1) // 2, (kw + 1) // 2
    padded = tf.pad(inputs, [[0, 0], [qh - 1, qh - 1], [qw - 1, qw - 1], [0, 0]])
    phases = tf.nn.conv2d(padded, phase_kernel(kernel), 1, 'VALID')
    rows, cols = height + qh - 1, width + qw - 1
    outputs = tf.reshape(phases, [-1, rows, cols, 2, 2, cout])
    outputs = tf.reshape(tf.transpose(outputs, [0, 1, 3, 2, 4, 5]), [-1, 2 * rows, 2 * cols, cout])
    outputs = outputs[:, :2 * (height - 1) + kh, :2 * (width - 1) + kw]

    def grad(upstream):
        # The gradients TensorFlow registers for Conv2DBackpropInput (faster than those of the
        # phase form's pad, convolution and reshapes).
        d_inputs = tf.nn.conv2d(upstream, kernel, 2, 'VALID')
        d_kernel = tf.compat.v1.nn.conv2d_backprop_filter(
            upstream, tf.shape(kernel), inputs, [1, 2, 2, 1], 'VALID')
        return d_inputs, d_kernel

    return outputs, grad
