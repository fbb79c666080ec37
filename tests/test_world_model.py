import numpy as np
import pytest
import tensorflow as tf

from dreamerv2_tf.agent import networks
from dreamerv2_tf.agent.world_model import WorldModel

from conftest import make_batch, make_config, make_spaces

SEED = tf.constant([5, 6], tf.int64)


def np_kl(post_logits, prior_logits):
    """KL(post || prior) per step, summed over latents; float64 NumPy reference."""
    def log_softmax(x):
        x = x - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))
    q, p = log_softmax(post_logits), log_softmax(prior_logits)
    return (np.exp(q) * (q - p)).sum((-1, -2))


def np_kl_loss(post, prior, balance, free, free_avg):
    # With forward=False both balanced terms have the value KL(post || prior).
    kl = np_kl(post, prior)
    if free_avg:
        return max(kl.mean(), free)
    return np.maximum(kl, free).mean()


def numeric_grad(fn, x, eps=1e-4):
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[index] += eps
        down[index] -= eps
        grad[index] = (fn(up) - fn(down)) / (2 * eps)
    return grad


@pytest.mark.parametrize('free, free_avg', [(0.0, True), (0.5, True), (0.5, False), (50.0, True)])
def test_kl_balancing_values_and_gradients_vs_numpy(free, free_avg):
    rssm = networks.RSSM(hidden=4, deter=4, stoch=3, discrete=4, name='rssm')
    rng = np.random.RandomState(0)
    post_np, prior_np = rng.randn(2, 3, 3, 4), rng.randn(2, 3, 3, 4)
    post, prior = tf.Variable(post_np, dtype=tf.float32), tf.Variable(prior_np, dtype=tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        loss, value = rssm.kl_loss({'logit': post}, {'logit': prior}, balance=0.8, free=free,
                                   free_avg=free_avg)
    np.testing.assert_allclose(value, np_kl(post_np, prior_np), rtol=1e-5)
    expected = np_kl_loss(post_np, prior_np, 0.8, free, free_avg)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # Balancing: 80% of the gradient trains the prior, 20% the posterior.
    grad_prior = numeric_grad(lambda x: np_kl_loss(post_np, x, 0.8, free, free_avg), prior_np)
    grad_post = numeric_grad(lambda x: np_kl_loss(x, prior_np, 0.8, free, free_avg), post_np)
    np.testing.assert_allclose(tape.gradient(loss, prior), 0.8 * grad_prior, atol=1e-5)
    np.testing.assert_allclose(tape.gradient(loss, post), 0.2 * grad_post, atol=1e-5)
    if free == 50.0:  # free nats above the KL: no gradient at all
        assert np.all(tape.gradient(loss, prior).numpy() == 0)


@pytest.fixture(scope='module')
def world_model():
    config = make_config('atari')
    obs_space, act_space = make_spaces(1, 6, True)
    wm = WorldModel(config, obs_space, act_space)
    batch = make_batch(8, 16, obs_space, act_space)
    wm.build(batch, SEED)
    return wm, batch


def test_preprocess(world_model):
    wm, _ = world_model
    obs = {'image': np.array([[0, 255]], np.uint8), 'reward': np.array([3.0], np.float32),
           'is_terminal': np.array([True]), 'log_x': np.array([1.0])}
    data = wm.preprocess(obs)
    np.testing.assert_allclose(data['image'], [[-0.5, 0.5]])
    assert float(data['reward'][0]) == pytest.approx(np.tanh(3.0))  # atari: clip_rewards tanh
    assert float(data['discount'][0]) == 0.0 and 'log_x' not in data
    data = wm.preprocess({**obs, 'is_terminal': np.array([False])})
    assert float(data['discount'][0]) == pytest.approx(0.999)  # exactly, not float16's 0.99902


def test_imagination_shapes_weights_and_true_first_discount(world_model):
    wm, batch = world_model
    _, _, outputs, _ = wm.loss(batch, None, SEED)
    actor = networks.MLP([6], 1, 8, dist='onehot', name='actor')
    is_terminal = np.zeros((8, 16), bool)
    is_terminal[0, 0] = True
    seq = wm.imagine(actor, outputs['post'], is_terminal, 5, SEED)
    n = 8 * 16
    assert seq['feat'].shape == (6, n, wm.rssm.feat_size) and seq['action'].shape == (6, n, 6)
    np.testing.assert_array_equal(seq['action'][0], 0)  # no action led into the start state
    disc, weight = seq['discount'].numpy(), seq['weight'].numpy()
    assert disc[0, 0] == 0 and disc[0, 1] == pytest.approx(0.999)  # true flags at the start
    assert np.all((disc[1:] > 0) & (disc[1:] < 1))  # predicted by the discount head
    expected = np.cumprod(np.concatenate([np.ones((1, n)), disc[:-1]]), 0)
    np.testing.assert_allclose(weight, expected, rtol=1e-5)


def test_report_video_layout(world_model):
    wm, batch = world_model
    video = wm.report(batch, SEED)['openl_image'].numpy()
    assert video.shape == (16, 3 * 64, 6 * 64, 1)
    # Top row is the truth: image + 0.5 in [0, 1], sequence k in the k-th column block.
    truth = batch['image'][3, 7].astype(np.float32) / 255.0
    np.testing.assert_allclose(video[7, :64, 3 * 64:4 * 64], truth, atol=1e-6)
    model = video[7, 64:128, 3 * 64:4 * 64]
    np.testing.assert_allclose(video[7, 128:, 3 * 64:4 * 64], (model - truth + 1) / 2, atol=1e-5)
