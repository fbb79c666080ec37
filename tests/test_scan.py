"""The unrolled `scan` against `tf.scan`: the same carries, forward and reversed, on nested
structures, with the same gradients; unknown lengths fall back to the while loop."""

import numpy as np
import tensorflow as tf

from dreamerv2_tf.agent.scan import scan


def _step(carry, elem):
    # A non-linear recurrence over a nested carry, so order and nesting both matter.
    x, seed = elem
    return {'h': tf.tanh(carry['h'] * 0.9 + x @ carry['w']), 'w': carry['w'] * 1.01,
            'n': carry['n'] + tf.cast(seed[0], tf.float32)}


def _inputs():
    rng = np.random.default_rng(0)
    xs = tf.constant(rng.normal(size=(7, 3, 4)), tf.float32)
    seeds = tf.constant(rng.integers(0, 100, size=(7, 2)), tf.int64)
    start = {'h': tf.constant(rng.normal(size=(3, 5)), tf.float32),
             'w': tf.constant(rng.normal(size=(4, 5)), tf.float32),
             'n': tf.zeros([], tf.float32)}
    return (xs, seeds), start


def test_scan_matches_tf_scan_forward_and_reverse():
    elems, start = _inputs()
    for reverse in (False, True):
        ours = scan(_step, elems, start, reverse=reverse)
        theirs = tf.scan(_step, elems, start, reverse=reverse)
        for key in start:
            np.testing.assert_allclose(ours[key].numpy(), theirs[key].numpy(), rtol=1e-6)
    # Reversed really runs back to front: the last step's carry saw one element only.
    first = _step(start, (elems[0][-1], elems[1][-1]))
    np.testing.assert_allclose(scan(_step, elems, start, reverse=True)['h'][-1].numpy(),
                               first['h'].numpy(), rtol=1e-6)


def test_scan_gradients_match_tf_scan():
    elems, start = _inputs()
    w = tf.Variable(start['w'])
    grads = []
    for fn in (scan, tf.scan):
        with tf.GradientTape() as tape:
            out = fn(_step, elems, {**start, 'w': w * 1.0})
            loss = tf.reduce_sum(out['h'] ** 2)
        grads.append(tape.gradient(loss, w).numpy())
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-5, atol=1e-6)


def test_unknown_length_falls_back_to_the_while_loop():
    elems, start = _inputs()

    @tf.function(input_signature=[tf.TensorSpec([None, 3, 4]), tf.TensorSpec([None, 2], tf.int64)])
    def run(xs, seeds):
        return scan(_step, (xs, seeds), start)['h']

    graph = run.get_concrete_function().graph
    assert any(op.type in ('While', 'StatelessWhile') for op in graph.get_operations())
    np.testing.assert_allclose(run(*elems).numpy(), tf.scan(_step, elems, start)['h'].numpy(),
                               rtol=1e-6)
