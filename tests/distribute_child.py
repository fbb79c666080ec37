"""Child process of tests/test_distribute.py: TensorFlow must split the CPU into two logical
devices before it initialises them, which a pytest process that already ran TF cannot do.

    python tests/distribute_child.py [optimizer] [equivalence]

Prints one JSON line {part: what it measured}; the test asserts on it.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from conftest import make_batch, make_config, make_spaces  # noqa: E402


def logical_cpus(count):
    import tensorflow as tf
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    return tf.distribute.MirroredStrategy([f'/cpu:{i}' for i in range(count)])


def relative(a, b):
    """max |a - b| / max |a| (|a| floored at 1e-6)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(a))), 1e-6))


def weights(agent):
    return [v.numpy() for net in agent.networks for v in net.variables]


def equivalence(strategy, updates=20, per_replica=2):
    """One device with batch 2B (no strategy) against 2 mirrored replicas x batch B; then
    checkpoints of each restored into a fresh agent of the other kind."""
    import keras
    import tensorflow as tf
    from dreamerv2_tf.agent import Agent
    # Free nats, a moving reward normaliser and frequent slow-critic refreshes: the batch
    # statistics and cross-replica updates that replicas must get right.
    config = make_config('atari', flags=['--kl.free', '0.1', '--reward_norm.momentum', '0.9',
                                         '--slow_target_update', '4'])
    obs_space, act_space = make_spaces(1, 4, True)
    keras.utils.set_random_seed(0)
    single = Agent(config, obs_space, act_space)
    keras.utils.set_random_seed(0)
    mirrored = Agent(config, obs_space, act_space, strategy=strategy)
    start = [relative(a, b) for a, b in zip(weights(single), weights(mirrored))]
    global_batch = 2 * per_replica
    state_single = single.initial_train_state(global_batch)
    state_mirrored = mirrored.initial_train_state(per_replica)
    result = {'start': max(start), 'losses': [], 'weights': [], 'replicas_equal': [],
              'state': []}
    for step in range(updates):
        batch = make_batch(global_batch, config.dataset.length, obs_space, act_space, seed=step)
        batch = {k: tf.constant(v) for k, v in batch.items()}
        shards = strategy.experimental_distribute_values_from_function(
            lambda context: {k: v[context.replica_id_in_sync_group * per_replica:
                                  (context.replica_id_in_sync_group + 1) * per_replica]
                             for k, v in batch.items()})
        state_single, metrics_single = single.train(batch, state_single)
        state_mirrored, metrics_mirrored = mirrored.train(shards, state_mirrored)
        losses = {k: relative(metrics_single[k], metrics_mirrored[k])
                  for k in metrics_single if k.endswith('_loss')}
        result['losses'].append(losses)
        result['weights'].append(max(relative(a, b) for a, b in
                                     zip(weights(single), weights(mirrored))))
        # Every replica holds the same weights (and slow critic, and optimizer moments).
        copies = [v for net in mirrored.networks for v in net.variables] + [
            v for opt in mirrored.optimizers for v in opt.variables]
        result['replicas_equal'].append(all(
            np.array_equal(*[c.numpy() for c in strategy.experimental_local_results(v.value)])
            for v in copies))
        deter = np.concatenate([t.numpy() for t in strategy.experimental_local_results(
            state_mirrored['deter'])])
        result['state'].append(relative(state_single['deter'].numpy(), deter))
    result['slow_equals_critic'] = relative(
        single.task_behavior.critic.variables[0].numpy(),
        single.task_behavior.slow_critic.variables[0].numpy())
    result['updates'] = int(mirrored.task_behavior.updates.numpy())
    result['loss_names'] = sorted(result['losses'][0])

    # Checkpoints: 2 replicas -> 1 device and 1 device -> 2 replicas, every piece of state.
    import tempfile
    from dreamerv2_tf.run.checkpoint import Checkpoint, agent_trackables
    directory = tempfile.mkdtemp()
    mirrored.step.assign(1234)
    single.step.assign(4321)

    def state(agent):
        items = agent_trackables(agent)
        values = {k: v.numpy() for k, v in items['variables'].items()}
        values.update({f'opt/{name}/{v.path}': v.numpy() for name, opt in
                       items['optimizers'].items() for v in opt.variables})
        values.update({f'state/{k}': v.numpy() for k, v in items['state'].items()})
        values['rng'] = agent.rng.state.numpy()
        return values

    result['portable'] = {}
    for name, source, strategy_of_target in (('2_to_1', mirrored, None),
                                             ('1_to_2', single, strategy)):
        Checkpoint(f'{directory}/{name}', source).save()
        keras.utils.set_random_seed(7)  # other initial weights than the source's
        target = Agent(config, obs_space, act_space, strategy=strategy_of_target)
        before = state(target)
        Checkpoint(f'{directory}/{name}', target).restore()
        want, got = state(source), state(target)
        result['portable'][name] = {
            'keys_equal': sorted(want) == sorted(got),
            'differed_before': sum(not np.array_equal(want[k], before[k]) for k in want),
            'mismatched': [k for k in want if not np.array_equal(want[k], got[k])],
            'step': int(target.step.numpy()),
        }
    return result


def optimizer(strategy):
    """The replicated optimizer step: the global-batch gradient, and under loss scaling a
    skipped step (no weight or moment changes, scale halved) when one replica overflows."""
    import keras
    import tensorflow as tf
    from dreamerv2_tf.agent.optimizer import Optimizer
    inputs = np.random.RandomState(0).randn(4, 3).astype(np.float32)

    def make(scope):
        keras.utils.set_random_seed(1)
        with scope:
            net = keras.layers.Dense(2, name='net')
            net.build((None, 3))
            opt = Optimizer('model', lr=0.1, eps=1e-5, clip=100, wd=0.01, mixed_precision=True)
            opt.build(net.trainable_variables)
        return net, opt

    def loss_fn(net, x):
        return tf.reduce_mean(tf.square(net(x) - 1.0))

    # Reference: one device, the whole batch.
    import contextlib
    net_1, opt_1 = make(contextlib.nullcontext())
    with tf.GradientTape() as tape:
        loss = loss_fn(net_1, inputs)
    metrics_1 = opt_1(tape, loss, net_1.trainable_variables)

    net_2, opt_2 = make(strategy.scope())

    @tf.function(autograph=False)
    def step(data):
        def replica(x):
            with tf.GradientTape() as tape:
                loss = loss_fn(net_2, x)
            return opt_2(tape, loss, net_2.trainable_variables)
        metrics = strategy.run(replica, args=(data,))
        return {k: strategy.experimental_local_results(v)[0] for k, v in metrics.items()}

    def shards(array):
        return strategy.experimental_distribute_values_from_function(
            lambda context: array[2 * context.replica_id_in_sync_group:
                                  2 * context.replica_id_in_sync_group + 2])

    metrics_2 = step(shards(inputs))
    result = {
        'finite_weights': max(relative(a.numpy(), b.numpy()) for a, b in
                              zip(net_1.trainable_variables, net_2.trainable_variables)),
        'finite_norm': relative(metrics_1['model_grad_norm'], metrics_2['model_grad_norm']),
        'scale_before': float(metrics_2['model_loss_scale']),
    }
    before = [v.numpy() for v in net_2.trainable_variables]
    moments = [v.numpy() for v in opt_2.variables]
    bad = inputs.copy()
    bad[3] = 1e18  # replica 1: a finite loss (~1e36) whose scaled gradient overflows
    metrics_3 = step(shards(bad))
    result['skip_norm_finite'] = bool(np.isfinite(float(metrics_3['model_grad_norm'])))
    result['skip_weights_unchanged'] = all(
        np.array_equal(a, b.numpy()) for a, b in zip(before, net_2.trainable_variables))
    names = [v.path for v in opt_2.variables]
    result['skip_changed_state'] = [n for n, a, b in zip(names, moments, opt_2.variables)
                                    if not np.array_equal(a, b.numpy())]
    result['scale_after'] = float(opt_2.opt.dynamic_scale.numpy())
    result['replicas_equal'] = all(
        np.array_equal(*[c.numpy() for c in strategy.experimental_local_results(v.value)])
        for v in list(net_2.trainable_variables) + list(opt_2.variables))
    return result


if __name__ == '__main__':
    import dreamerv2_tf  # noqa: F401  (process defaults before TensorFlow loads)
    strategy = logical_cpus(2)
    parts = sys.argv[1:] or ['optimizer', 'equivalence']
    functions = {'equivalence': equivalence, 'optimizer': optimizer}
    print(json.dumps({part: functions[part](strategy) for part in parts}), flush=True)
