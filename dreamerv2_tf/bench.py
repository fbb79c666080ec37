"""Benchmarks that are too slow for tests. Prints medians; nothing is written to disk.

    python -m dreamerv2_tf.bench train [--configs defaults atari] [--precision 32] [--steps 5]
    python -m dreamerv2_tf.bench policy [--configs defaults atari] [--batch 1 64] [--calls 200]
                                        [--saved-model export/models/pong/3000]

`train` times full agent updates (world model, actor and critic) on a random batch of the
configured size (16 x 50 for the paper's configs) after warm-up steps; `policy` times eval policy
steps of the in-process agent and, with `--saved-model`, of an exported SavedModel's
`serving_default` signature (the config should match the exported one).
Config flags (`--jit xla`, `--dataset.batch 8`, ...) pass through.
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np


def parse(argv):
    parser = argparse.ArgumentParser(
        prog='python -m dreamerv2_tf.bench', description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split('\n\n', 1)[1])
    parser.add_argument('what', choices=('train', 'policy'), help='what to time')
    parser.add_argument('--configs', nargs='+', default=['defaults', 'atari'],
                        help='config blocks (default: defaults atari)')
    parser.add_argument('--steps', type=int, default=5, help='timed train steps (train)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed steps first')
    parser.add_argument('--batch', type=int, nargs='+', default=[1, 64],
                        help='policy batch sizes (policy)')
    parser.add_argument('--calls', type=int, default=200, help='timed policy calls (policy)')
    parser.add_argument('--saved-model', help='also time this exported SavedModel (policy)')
    return parser.parse_known_args(argv)


def spaces_of(config):
    """Observation and action spaces of the configured task, from one real env."""
    from dreamerv2_tf import envs
    env = envs.make_env(config)
    try:
        return env.obs_space, env.act_space
    finally:
        env.close()


def random_batch(obs_space, act_space, batch, length, seed=0):
    rng = np.random.RandomState(seed)
    data = {}
    for key, space in obs_space.items():
        if key.startswith('log_'):
            continue
        shape = (batch, length) + space.shape
        if space.dtype == np.uint8:
            data[key] = rng.randint(0, 256, shape).astype(np.uint8)
        elif space.dtype == bool:
            data[key] = np.zeros(shape, bool)
        else:
            data[key] = rng.randn(*shape).astype(space.dtype)
    data['is_first'][:, 0] = True
    action = act_space['action']
    data['action'] = np.stack([[action.sample(rng) for _ in range(length)] for _ in range(batch)])
    return data


def bench_train(agent, config, args):
    batch = random_batch(agent.obs_space, agent.act_space, config.dataset.batch,
                         config.dataset.length)
    state = agent.initial_train_state(config.dataset.batch)
    times = []
    for index in range(args.warmup + args.steps):
        start = time.perf_counter()
        state, metrics = agent.train(batch, state)
        float(metrics['model_loss'])  # wait for the result
        seconds = time.perf_counter() - start
        kind = 'warm-up' if index < args.warmup else 'timed'
        print(f'  step {index + 1}/{args.warmup + args.steps} ({kind}): {seconds:.2f} s', flush=True)
        if index >= args.warmup:
            times.append(seconds)
    shape = f'{config.dataset.batch} x {config.dataset.length}'
    print(f'train step, batch {shape}, precision {config.precision}, jit {config.jit}: median '
          f'{statistics.median(times):.2f} s over {len(times)} steps (min {min(times):.2f}, '
          f'max {max(times):.2f})')
    return statistics.median(times)


def time_calls(step, state, args):
    """Median seconds of `state = step(state)` over `args.calls` calls after warm-up."""
    times = []
    for index in range(args.warmup + args.calls):
        start = time.perf_counter()
        state = step(state)
        if index >= args.warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_policy(agent, config, args):
    import tensorflow as tf
    model = tf.saved_model.load(args.saved_model) if args.saved_model else None
    for size in args.batch:
        data = random_batch(agent.obs_space, agent.act_space, size, 1)
        obs = {k: v[:, 0] for k, v in data.items() if k != 'action'}

        def agent_step(state):
            out, state = agent.policy(obs, state, 'eval')
            out['action'].numpy()
            return state

        seconds = time_calls(agent_step, agent.initial_policy_state(size), args)
        print(f'agent.policy (eval), batch {size}: median {1000 * seconds:.2f} ms over '
              f'{args.calls} calls', flush=True)
        if model is None:
            continue
        signature = model.signatures['serving_default']
        inputs = {k: tf.constant(obs[k]) for k in signature.structured_input_signature[1]
                  if k in obs}
        seed = tf.constant([0, 0], tf.int64)

        def served_step(state):
            out = signature(**inputs, **state, seed=seed)
            out['action'].numpy()
            return {k: out[k] for k in state}

        state = model.signatures['initial_state'](batch_size=tf.constant(size))
        seconds = time_calls(served_step, state, args)
        print(f'SavedModel serving_default, batch {size}: median {1000 * seconds:.2f} ms over '
              f'{args.calls} calls', flush=True)


def main(argv=None):
    from dreamerv2_tf import config as configlib

    args, rest = parse(sys.argv[1:] if argv is None else argv)
    try:
        config = configlib.parse_flags(configlib.compose(args.configs), rest)
    except configlib.ConfigError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    import tensorflow as tf
    from dreamerv2_tf.agent import Agent

    tf.keras.utils.set_random_seed(config.seed)
    obs_space, act_space = spaces_of(config)
    start = time.perf_counter()
    agent = Agent(config, obs_space, act_space)
    params = sum(int(np.prod(v.shape)) for v in agent.wm.trainable_variables)
    print(f'{config.task}: world model {params:,} parameters, built in '
          f'{time.perf_counter() - start:.1f} s (TF {tf.__version__}, TF_ENABLE_ONEDNN_OPTS='
          f"{os.environ.get('TF_ENABLE_ONEDNN_OPTS')})", flush=True)
    if args.what == 'train':
        bench_train(agent, config, args)
    else:
        bench_policy(agent, config, args)
    return 0


if __name__ == '__main__':
    sys.exit(main())
