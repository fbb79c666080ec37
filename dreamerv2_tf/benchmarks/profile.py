"""Where the train step's time goes: FLOPs from the model's shapes, time per component, and the
share of this machine's matmul peak (`python -m dreamerv2_tf.bench train --profile DIR`).

FLOPs count multiply-adds as 2 and only the matmuls and convolutions (the rest is a few percent).
They come from the built networks' kernel shapes and the batch, sequence and horizon sizes, not
from a profiler, so they are the same on every machine; a test checks them against a hand count.
A backward pass counts one forward pass for each kind of gradient it needs (for a layer's inputs,
for its weights), so twice the forward pass in the world model and once where only one is needed.

Components are timed as separate compiled functions on the same batch, so the table shows where a
step spends time; their sum differs from the fused step a little (the step overlaps and shares
work), and the step's own time is printed beside it.
"""

import statistics
import time

# FLOPs -------------------------------------------------------------------------------------------

def dense_flops(layer):
    """Forward FLOPs per row of a Keras Dense layer (2 x in x out)."""
    fan_in, fan_out = layer.kernel.shape
    return 2 * int(fan_in) * int(fan_out)


def conv_flops(layer, height, width):
    """(FLOPs per image, output height, output width) of a 'valid' Conv2D on height x width."""
    kh, kw, cin, cout = (int(d) for d in layer.kernel.shape)
    sh, sw = layer.strides
    out_h, out_w = (height - kh) // sh + 1, (width - kw) // sw + 1
    return 2 * kh * kw * cin * cout * out_h * out_w, out_h, out_w


def deconv_flops(layer, height, width):
    """(FLOPs per image, output height, output width) of a 'valid' Conv2DTranspose: every input
    pixel scatters a kh x kw x cout patch from its cin values."""
    kh, kw, cout, cin = (int(d) for d in layer.kernel.shape)  # Keras stores (h, w, out, in)
    sh, sw = layer.strides
    out_h, out_w = (height - 1) * sh + kh, (width - 1) * sw + kw
    return 2 * kh * kw * cin * cout * height * width, out_h, out_w


def mlp_flops(mlp):
    """Forward FLOPs per row of a head (`networks.MLP`): hidden layers plus its output layer(s)."""
    return sum(dense_flops(block.dense) for block in mlp.hidden) + dist_layer_flops(mlp.head)


def dist_layer_flops(layer):
    """Forward FLOPs per row of a `networks.DistLayer` (its output layer and any std layer)."""
    total = dense_flops(layer.out)
    if layer.dist in layer.STD_DISTS:
        total += dense_flops(layer.std)
    return total


def encoder_flops(encoder, obs_space):
    """Forward FLOPs per observation of `networks.Encoder`."""
    total = 0
    if encoder.cnn_keys:
        height, width = obs_space[encoder.cnn_keys[0]].shape[:2]
        for conv in encoder.convs:
            flops, height, width = conv_flops(conv, height, width)
            total += flops
    if encoder.mlp_keys:
        total += sum(dense_flops(block.dense) for block in encoder.mlp)
    return total


def decoder_flops(decoder):
    """Forward FLOPs per feature vector of `networks.Decoder`."""
    total = 0
    if decoder.cnn_keys:
        total += dense_flops(decoder.cnn_in)
        height = width = 1
        for deconv in decoder.deconvs:
            flops, height, width = deconv_flops(deconv, height, width)
            total += flops
    if decoder.mlp_keys:
        total += sum(dense_flops(block.dense) for block in decoder.mlp)
        total += sum(dist_layer_flops(head) for head in decoder.mlp_heads.values())
    return total


def rssm_flops(rssm):
    """(prior step, posterior extra) forward FLOPs per row of `networks.RSSM`: an imagination step
    runs the prior (input layer, GRU, every ensemble head); an observe step adds the posterior."""
    prior = dense_flops(rssm.img_in.dense) + dense_flops(rssm.gru.dense)
    prior += sum(dense_flops(out.dense) + dense_flops(dist)
                 for out, dist in zip(rssm.img_out, rssm.img_dist))
    posterior = dense_flops(rssm.obs_out.dense) + dense_flops(rssm.obs_dist)
    return prior, posterior


def step_flops(agent, batch, length, horizon):
    """FLOPs of one train step of `agent` on [batch, length] sequences with `horizon` imagination
    steps, per component: {name: (forward, backward)}. Only the task behaviour is counted."""
    wm = agent.wm
    ac = agent.task_behavior
    rows = batch * length  # observed steps, and imagination start states
    prior, posterior = rssm_flops(wm.rssm)
    reward = mlp_flops(wm.heads['reward'])
    discount = mlp_flops(wm.heads['discount']) if 'discount' in wm.heads else 0
    actor, critic = mlp_flops(ac.actor), mlp_flops(ac.critic)
    imagined = (horizon + 1) * rows  # start state plus the imagined ones

    forward = {
        'encoder': rows * encoder_flops(wm.encoder, agent.obs_space),
        'rssm_observe': rows * (prior + posterior),
        'decoder': rows * decoder_flops(wm.heads['decoder']),
        'heads': rows * (reward + discount),
        'imagination': horizon * rows * (actor + prior),
        # Reward, discount and slow critic over the imagined sequence (the targets).
        'targets': imagined * (reward + discount + critic),
        'actor': (horizon - 1) * rows * actor,
        'critic': horizon * rows * critic,
    }
    if ac.actor_grad in ('reinforce', 'both'):
        forward['actor'] += (horizon - 1) * rows * critic  # the baseline
    # A backward pass costs one forward pass per kind of gradient it needs: for the inputs of a
    # layer and for its weights (TensorFlow prunes the other). The world model needs both
    # everywhere (the first convolution's input gradient is counted too, a small excess).
    backward = {name: 2 * forward[name] for name in (
        'encoder', 'rssm_observe', 'decoder', 'heads')}
    # The critic and the actor read stopped features: weight gradients only.
    backward['critic'] = forward['critic']
    backward['actor'] = (horizon - 1) * rows * actor
    # Reinforce gradients stop at the actor's log-probabilities. Dynamics gradients flow back
    # through the targets and the imagined rollout for their inputs (the heads, slow critic and
    # RSSM are not trained by the actor loss), and into the rollout's actor for its weights.
    dynamics = ac.actor_grad in ('dynamics', 'both')
    backward['imagination'] = forward['imagination'] if dynamics else 0
    backward['targets'] = forward['targets'] if dynamics else 0
    return {name: (forward[name], backward[name]) for name in forward}


# Timing ------------------------------------------------------------------------------------------

def matmul_gflops(size=2048, repeats=10):
    """This machine's float32 matmul GFLOP/s, measured in this process (median of `repeats`)."""
    import tensorflow as tf
    a = tf.random.normal([size, size])
    b = tf.random.normal([size, size])
    fn = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
    fn(a, b).numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(a, b).numpy()
        times.append(time.perf_counter() - start)
    return 2 * size ** 3 / statistics.median(times) / 1e9


def _median_seconds(fn, repeats, warmup=1):
    for _ in range(warmup):
        _block(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _block(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _block(result):
    """Waits for every tensor in `result` (a nested structure)."""
    import tensorflow as tf
    for value in tf.nest.flatten(result):
        if hasattr(value, 'numpy'):
            value.numpy()


def component_functions(agent, data):
    """Compiled functions, one per measured stage of the train step, on the model inputs `data`.
    Stages that include earlier ones (e.g. `wm_gradients` includes the world-model forward pass)
    are differenced in `breakdown`."""
    import tensorflow as tf
    wm, ac = agent.wm, agent.task_behavior
    seed = tf.constant([1, 2], tf.int64)
    batch = next(iter(data.values())).shape[0]
    state = agent.initial_train_state(batch)
    data = agent.inputs(data, 'action')
    pre = wm.preprocess(data)
    embed = wm.encoder(pre)
    post, _ = wm.rssm.observe(embed, pre['action'], pre['is_first'], None, seed)
    feat = wm.rssm.get_feat(post)
    horizon = agent.config.imag_horizon

    def fn(body):
        return tf.function(body, autograph=False)

    def wm_gradients():
        with tf.GradientTape() as tape:
            loss, *_ = wm.loss(data, state, seed)
        return tape.gradient(loss, wm.trainable_variables)

    def imagine():
        return wm.imagine(ac.actor, post, data['is_terminal'], horizon, seed)

    def actor_gradients():
        with tf.GradientTape() as tape:
            seq = imagine()
            seq['reward'], _ = ac.reward_norm(wm.reward(seq['feat']))
            target, _ = ac.target(seq)
            loss, _ = ac.actor_loss(seq, target)
        return tape.gradient(loss, ac.actor.trainable_variables), seq, target

    seq, target = fn(lambda: actor_gradients()[1:])()

    def critic_gradients():
        with tf.GradientTape() as tape:
            loss, _ = ac.critic_loss(seq, target)
        return tape.gradient(loss, ac.critic.trainable_variables)

    def heads():
        return [head(feat) for name, head in wm.heads.items() if name != 'decoder']

    def decoder():
        return {k: d.mean() for k, d in wm.heads['decoder'](feat).items()}

    return {
        'encoder': fn(lambda: wm.encoder(wm.preprocess(data))),
        'rssm_observe': fn(lambda: wm.rssm.observe(embed, pre['action'], pre['is_first'], None,
                                                   seed)),
        'decoder': fn(decoder),
        'heads': fn(lambda: [h.mean() if hasattr(h, 'mean') else h for h in heads()]),
        'wm_forward': fn(lambda: wm.loss(data, state, seed)[0]),
        'wm_gradients': fn(wm_gradients),
        'wm_train': fn(lambda: wm.train(data, state, seed)[2]),
        'imagination': fn(lambda: imagine()['feat']),
        'actor_gradients': fn(lambda: actor_gradients()[0]),
        'critic_gradients': fn(critic_gradients),
        'step': fn(lambda: agent._train(data, state)[1]),
    }


def breakdown(agent, data, repeats=3):
    """Median seconds of each component of the train step: {name: seconds}. Backward passes and
    optimizer updates are differences of nested stages (so they include their own overheads)."""
    fns = component_functions(agent, data)
    raw = {name: _median_seconds(fn, repeats) for name, fn in fns.items()}
    forward_parts = raw['encoder'] + raw['rssm_observe'] + raw['decoder'] + raw['heads']
    ac_parts = raw['imagination'] + raw['actor_gradients'] + raw['critic_gradients']
    return {
        'encoder': raw['encoder'],
        'rssm_observe': raw['rssm_observe'],
        'decoder': raw['decoder'],
        'heads': raw['heads'],
        'wm_losses_other': max(raw['wm_forward'] - forward_parts, 0.0),
        'wm_backward': max(raw['wm_gradients'] - raw['wm_forward'], 0.0),
        'wm_optimizer': max(raw['wm_train'] - raw['wm_gradients'], 0.0),
        'imagination': raw['imagination'],
        'actor': max(raw['actor_gradients'] - raw['imagination'], 0.0),
        'critic': raw['critic_gradients'],
        'ac_optimizers_other': max(raw['step'] - raw['wm_train'] - ac_parts, 0.0),
        'step': raw['step'],
    }


# Which FLOPs each timed component does (forward f, backward b of `step_flops`).
TIMED_FLOPS = {
    'encoder': lambda f, b: f['encoder'],
    'rssm_observe': lambda f, b: f['rssm_observe'],
    'decoder': lambda f, b: f['decoder'],
    'heads': lambda f, b: f['heads'],
    'wm_losses_other': lambda f, b: 0,
    'wm_backward': lambda f, b: sum(b[k] for k in ('encoder', 'rssm_observe', 'decoder', 'heads')),
    'wm_optimizer': lambda f, b: 0,
    'imagination': lambda f, b: f['imagination'],
    'actor': lambda f, b: f['targets'] + f['actor'] + b['imagination'] + b['targets'] + b['actor'],
    'critic': lambda f, b: f['critic'] + b['critic'],
    'ac_optimizers_other': lambda f, b: 0,
}


def table(seconds, flops, peak):
    """Markdown table: component, ms, share of the step, GFLOP, GFLOP/s, share of the peak."""
    forward = {k: v[0] for k, v in flops.items()}
    backward = {k: v[1] for k, v in flops.items()}
    step = seconds['step']
    total_flops = sum(forward.values()) + sum(backward.values())
    lines = ['| component | ms | share of step | GFLOP | GFLOP/s | share of peak |',
             '| --- | --- | --- | --- | --- | --- |']
    for name, count_fn in TIMED_FLOPS.items():
        secs = seconds[name]
        count = count_fn(forward, backward)
        rate = count / secs / 1e9 if secs > 0 and count else 0.0
        lines.append(f'| {name} | {secs * 1e3:.1f} | {secs / step:.0%} | {count / 1e9:.2f} | '
                     f'{rate:.1f} | {rate / peak:.0%} |')
    rate = total_flops / step / 1e9
    lines.append(f'| **step** | {step * 1e3:.1f} | 100% | {total_flops / 1e9:.2f} | {rate:.1f} | '
                 f'{rate / peak:.0%} |')
    return '\n'.join(lines)


def profile_step(agent, config, data, logdir, steps=3, repeats=3):
    """Writes a TensorBoard profiler trace of `steps` train steps to `logdir` and prints the
    breakdown table; returns (seconds, flops, peak)."""
    import tensorflow as tf
    batch, length = next(iter(data.values())).shape[:2]
    flops = step_flops(agent, batch, length, config.imag_horizon)
    print('Timing components (compiling each first) ...', flush=True)
    seconds = breakdown(agent, data, repeats)
    print('Measuring the matmul peak (2048 x 2048 float32) ...', flush=True)
    peak = matmul_gflops()
    state = agent.initial_train_state(batch)
    if logdir:
        tf.profiler.experimental.start(str(logdir))
        try:
            for index in range(steps):
                with tf.profiler.experimental.Trace('train', step_num=index, _r=1):
                    state, metrics = agent.train(data, state)
                    float(metrics['model_loss'])
        finally:
            tf.profiler.experimental.stop()
        print(f'Profiler trace of {steps} steps in {logdir} (TensorBoard, Profile tab).')
    print(f'\nTrain step breakdown, batch {batch} x {length}, horizon {config.imag_horizon}, '
          f'precision {config.precision}; matmul peak {peak:.1f} GFLOP/s:\n')
    print(table(seconds, flops, peak))
    total = sum(f + b for f, b in flops.values())
    print(f'\nStep: {total / 1e9:.1f} GFLOP in {seconds["step"]:.3f} s = '
          f'{total / seconds["step"] / 1e9:.1f} GFLOP/s, {total / seconds["step"] / 1e9 / peak:.0%}'
          f' of the matmul peak.')
    return seconds, flops, peak
