"""Benchmarks that are too slow for tests.

    python -m dreamerv2_tf.bench train [--configs defaults atari] [--precision 32] [--steps 5]
                                       [--profile runs/profile]
                                       [--distribute mirrored [--distribute_devices /cpu:0,/cpu:1]]
    python -m dreamerv2_tf.bench policy [--configs defaults atari] [--batch 1 64] [--calls 200]
                                        [--saved-model export/models/pong/3000]
                                        [--format savedmodel onnx tflite]
    python -m dreamerv2_tf.bench learn --task dmc_cartpole_balance \
        --configs defaults dmc_proprio small --seeds 3 --steps 5e4 [--parallel 1] \
        [--root runs/learning/NAME] [--out benchmarks/learning/NAME]
    python -m dreamerv2_tf.bench loop [--configs defaults dmc_proprio small] \
        [--task dmc_cartpole_balance] [--steps 2000] [--warmup TRAIN_EVERY] [--bound-updates 10]
    python -m dreamerv2_tf.bench faults [--kills 20]      (see: bench faults --help)
    python -m dreamerv2_tf.bench memory [--minutes 30]    (see: bench memory --help)

`train` times full agent updates (world model, actor and critic) on a random batch of the
configured size (16 x 50 for the paper's configs; per replica with `--distribute`, which also
prints samples (sequence steps) per second per replica and in total) after warm-up steps (with
`--profile`, also a profiler trace and a per-component table of time, FLOPs and the share of the
matmul peak measured in the same process); `policy` times eval policy
steps of the in-process agent and, with `--saved-model`, of an exported SavedModel's
`serving_default` signature (the config should match the exported one); with `--format`, also
the policy core of each listed runtime (the SavedModel's `core` signature, onnxruntime,
ai-edge-litert) on the same inputs and noise, from `--saved-model`'s folder or else from an
export of the benchmark's fresh agent to a temporary folder (whose `serving_default` is timed
too when `savedmodel` is listed). Both print medians and write
nothing. `learn` trains `--seeds` seeded runs of `--task` for `--steps` agent steps
(each a resumable logdir `<root>/seed<i>`, run by `python -m dreamerv2_tf.train`), measures a
random policy, and writes a table of eval returns over frames (mean, min, max over seeds, beside
the paper's curve where `scores/` has one) and `curves.png` to `<out>`; rerun it to resume.
`loop` runs the real training loop (`python -m dreamerv2_tf.train`'s Trainer, in a temporary
logdir unless `--logdir` is given) through prefill, pretrain and `--warmup` agent steps, then
measures `--steps` agent steps: the loop's frames/s, the bound the update alone sets
(train_every x action_repeat / the median update time, timed after the loop in the same
process), their ratio, and a table of where the measured wall time went (updates, policy calls,
env steps, replay writes, sampling, logging, checkpoints, evaluation, other).
Config flags (`--jit xla`, `--dataset.batch 8`, `--prefill 1000`, ...) pass through to the
agent or the runs.
"""

import argparse
import json
import os
import signal
import statistics
import sys
import time

import numpy as np

from dreamerv2_tf.protocol import is_model_input


def count(text):
    """A whole number that may be written like 5e4."""
    value = float(text)
    if value != int(value):
        raise argparse.ArgumentTypeError(f'{text} is not a whole number')
    return int(value)


def parse(argv):
    parser = argparse.ArgumentParser(
        prog='python -m dreamerv2_tf.bench', description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split('\n\n', 1)[1])
    parser.add_argument('what', choices=('train', 'policy', 'learn', 'loop', 'faults', 'memory'),
                        help='what to measure (faults, memory: see --help of each)')
    parser.add_argument('--configs', nargs='+', default=['defaults', 'atari'],
                        help='config blocks (default: defaults atari)')
    parser.add_argument('--steps', type=count, default=5,
                        help='timed train steps (train); agent steps per seed (learn), e.g. 5e4; '
                        'measured agent steps after the warm-up (loop, default 2000)')
    parser.add_argument('--warmup', type=int, help='untimed steps or calls first (default 2; '
                        'loop: agent steps after prefill, default train_every)')
    parser.add_argument('--bound-updates', type=int, default=10,
                        help='updates timed for the bound after the loop (loop)')
    parser.add_argument('--batch', type=int, nargs='+', default=[1, 64],
                        help='policy batch sizes (policy)')
    parser.add_argument('--calls', type=int, default=200, help='timed policy calls (policy)')
    parser.add_argument('--saved-model', help='also time this exported SavedModel (policy)')
    parser.add_argument('--profile', metavar='DIR', help='also write a TensorBoard profiler trace '
                        'to DIR and print the time, FLOPs and GFLOP/s of each component (train)')
    parser.add_argument('--format', nargs='+', choices=('savedmodel', 'onnx', 'tflite'),
                        default=[], help="also time the policy core in these runtimes (policy)")
    parser.add_argument('--threads', type=int,
                        help="threads of onnxruntime and LiteRT (policy; default: each runtime's "
                             'own choice)')
    parser.add_argument('--task', help='task to learn (learn; default: the configs\' task)')
    parser.add_argument('--seeds', type=int, default=3, help='seeded runs 0..N-1 (learn)')
    parser.add_argument('--parallel', type=int, default=1,
                        help='seeds run at once (learn); more than the CPU cores slows every seed '
                             'more than it saves (README: Results)')
    parser.add_argument('--root', help='folder of the seeds\' logdirs (learn; default '
                        'runs/learning/<name>)')
    parser.add_argument('--out', help='report folder (learn; default benchmarks/learning/<name>)')
    parser.add_argument('--name', help='benchmark name (learn; default <task>_<configs after '
                        'defaults>, e.g. dmc_cartpole_balance_dmc_proprio_small)')
    parser.add_argument('--bin', type=float, help='frames per table row and bin (learn; '
                        'default 1e4 for DMC, 1e6 for Atari, else steps x repeat / 10)')
    parser.add_argument('--random-episodes', type=int, default=10,
                        help='episodes of the random-policy baseline (learn)')
    parser.add_argument('--report-only', action='store_true',
                        help='only rewrite the report from what the seeds logged so far (learn)')
    if argv and argv[0] in ('faults', 'memory'):
        return argparse.Namespace(what=argv[0]), argv[1:]  # they parse their own options
    args, rest = parser.parse_known_args(argv)
    if args.what == 'learn' and '--steps' not in argv:
        parser.error('learn needs --steps (agent steps per seed)')
    if args.what == 'loop' and '--steps' not in argv:
        args.steps = 2000
    return args, rest


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
        if not is_model_input(key):
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
    strategy = getattr(agent, 'strategy', None)
    replicas = strategy.num_replicas_in_sync if strategy else 1
    per_replica = config.dataset.batch
    batch = random_batch(agent.obs_space, agent.act_space, replicas * per_replica,
                         config.dataset.length)
    if strategy:  # replica r trains on rows r*B..(r+1)*B of the global batch
        whole = batch
        batch = strategy.experimental_distribute_values_from_function(
            lambda context: {k: v[context.replica_id_in_sync_group * per_replica:
                                  (context.replica_id_in_sync_group + 1) * per_replica]
                             for k, v in whole.items()})
    state = agent.initial_train_state(per_replica)
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
    samples = per_replica * config.dataset.length  # sequence steps per replica and update
    median = statistics.median(times)
    print(f'samples per second ({config.distribute}, {replicas} replica(s) x batch {shape}): '
          f'{samples / median:.1f} per replica, {replicas * samples / median:.1f} in total')
    if args.profile:
        if replicas > 1:
            print('--profile times the components on one device; run it without --distribute.')
        else:
            from dreamerv2_tf.benchmarks import profile
            profile.profile_step(agent, config, batch, args.profile)
    return median


def time_calls(step, state, args):
    """Median seconds of `state = step(state)` over `args.calls` calls after warm-up."""
    times = []
    for index in range(args.warmup + args.calls):
        start = time.perf_counter()
        state = step(state)
        if index >= args.warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def core_runners(agent, config, args, scratch):
    """(metadata, {format: runner}) for `args.format`, from `--saved-model`'s folder or from an
    export of `agent` to `scratch`."""
    import pathlib
    from dreamerv2_tf.serving import portable
    from dreamerv2_tf.serving.load import SavedModelCoreRunner
    from dreamerv2_tf.serving.policy_module import CORE_METADATA, EXTRA_DIR, PolicyModule
    folder = pathlib.Path(args.saved_model) if args.saved_model else None
    if folder is None:
        folder = pathlib.Path(scratch) / 'export'
        start = time.perf_counter()
        PolicyModule(agent.acting, config, int(agent.step.numpy())).save(folder, args.format)
        print(f"Exported {', '.join(args.format)} to {folder} in "
              f'{time.perf_counter() - start:.1f} s', flush=True)
    # A SavedModel-only export keeps the core's metadata in its assets.extra folder.
    beside = folder / CORE_METADATA
    metadata = portable.read_metadata(beside if beside.exists()
                                      else folder / EXTRA_DIR / CORE_METADATA)
    runners = {}
    for kind in args.format:
        if kind == 'savedmodel':
            runners[kind] = SavedModelCoreRunner(folder)
        else:
            runners[kind] = portable.RUNNERS[kind](folder / f'policy.{kind}',
                                                   threads=args.threads)
    return metadata, runners


def bench_policy(agent, config, args):
    import tempfile
    import tensorflow as tf
    from dreamerv2_tf.serving import portable
    model = tf.saved_model.load(args.saved_model) if args.saved_model else None
    with tempfile.TemporaryDirectory() as scratch:
        metadata, runners = (core_runners(agent, config, args, scratch) if args.format
                             else (None, {}))
        if model is None and 'savedmodel' in runners:  # the fresh export's serving_default too
            model = runners['savedmodel'].model
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
            if model is not None:
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
                print(f'SavedModel serving_default, batch {size}: median {1000 * seconds:.2f} ms '
                      f'over {args.calls} calls', flush=True)
            for kind, runner in runners.items():
                # The same observations and noise for every runtime; noise drawing is not timed.
                policy = portable.CorePolicy(runner, metadata, seed=0)
                noise = policy.noise_inputs(size, 'eval')

                def core_step(state):
                    return policy(obs, state, 'eval', noise)[1]

                seconds = time_calls(core_step, policy.initial_state(size), args)
                print(f'{kind} core ({type(runner).__name__}), batch {size}: median '
                      f'{1000 * seconds:.2f} ms over {args.calls} calls', flush=True)


def bench_learn(config, args, flags, argv):
    import pathlib
    import shlex
    from dreamerv2_tf import envs
    from dreamerv2_tf.benchmarks import learn
    try:
        envs.parse_task(config.task)
    except ValueError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    if args.seeds < 1 or args.steps < 1 or args.parallel < 1:
        print('error: --seeds, --steps and --parallel must be at least 1', file=sys.stderr)
        return 2
    # Every block but `defaults` names the run: `dmc_proprio small` and `dmc_vision small` differ.
    blocks = [c for c in args.configs if c != 'defaults'] or ['defaults']
    name = args.name or '_'.join([config.task, *blocks])
    root = pathlib.Path(args.root or f'runs/learning/{name}')
    out = pathlib.Path(args.out or f'benchmarks/learning/{name}')
    spec = {'task': config.task, 'configs': list(args.configs), 'flags': list(flags),
            'steps': args.steps, 'seeds': args.seeds, 'commit': learn.git_commit(),
            'machine': learn.machine()}
    try:
        spec = learn.check_spec(root, spec)
    except ValueError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    command = shlex.join(['python', '-m', 'dreamerv2_tf.bench', *learn.shown_argv(argv)])
    suite = config.task.split('_')[0]
    bin_size = args.bin or {'dmc': 1e4, 'atari': 1e6}.get(
        suite, max(1.0, args.steps * config.action_repeat / 10))
    random_path = root / 'random.json'
    if random_path.exists():
        random_returns = json.loads(random_path.read_text())
    elif args.report_only:
        random_returns = []
    else:
        print(f'Random policy: {args.random_episodes} episodes of {config.task}.', flush=True)
        random_returns = learn.random_baseline(config, args.random_episodes)
        random_path.write_text(json.dumps(random_returns))
    if not args.report_only:
        cores = os.cpu_count() or 1
        if args.parallel > cores:
            print(f'warning: --parallel {args.parallel} on {cores} CPU cores: the seeds compete '
                  f'for them and each runs slower', flush=True)
        print(f'Learning benchmark {name}: {spec["seeds"]} seeds x {args.steps} agent steps '
              f'({args.steps * config.action_repeat:,} frames) in {root}, {args.parallel} at a '
              f'time.', flush=True)
        # SIGTERM (kill, a scheduler) stops the seeds as Ctrl-C does: saved, then exit 143.
        previous = signal.signal(signal.SIGTERM, _exit_on_signal)
        try:
            failed = learn.run_seeds(spec, root, args.parallel,
                                     lambda line: print(line, flush=True))
        finally:
            signal.signal(signal.SIGTERM, previous)
        if failed:
            print(f'error: seeds {failed} failed; see {root}/seed<i>/train.log. Rerun the same '
                  f'command to resume.', file=sys.stderr)
    learn.report(spec, root, out, config, command, bin_size, random_returns)
    print((out / 'table.md').read_text())
    print(f'Wrote {out}/README.md, table.md, results.json and curves.png.')
    return 1 if not args.report_only and failed else 0


def _exit_on_signal(signum, frame):
    raise SystemExit(128 + signum)


def main(argv=None):
    from dreamerv2_tf import config as configlib

    argv = sys.argv[1:] if argv is None else argv
    args, rest = parse(argv)
    if args.what in ('faults', 'memory'):
        import importlib
        return importlib.import_module(f'dreamerv2_tf.benchmarks.{args.what}').main(rest)
    try:
        config = configlib.parse_flags(configlib.compose(args.configs), rest)
        if args.task:
            config = config.update(task=args.task)
    except configlib.ConfigError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    if args.what == 'learn':
        return bench_learn(config, args, rest, argv)
    if args.what == 'loop':
        from dreamerv2_tf.benchmarks import loop
        return loop.run(config, args)
    if args.warmup is None:
        args.warmup = 2
    strategy = None
    if args.what == 'train' and config.distribute != 'none':
        from dreamerv2_tf.run import distribute
        try:  # before TensorFlow sets up its devices (logical CPUs)
            configlib.check_distribute(config)
            strategy = distribute.make_strategy(config)
        except (configlib.ConfigError, distribute.DistributeError) as e:
            print(f'error: {e}', file=sys.stderr)
            return 2
    import tensorflow as tf
    from dreamerv2_tf.agent import Agent

    tf.keras.utils.set_random_seed(config.seed)
    obs_space, act_space = spaces_of(config)
    start = time.perf_counter()
    agent = Agent(config, obs_space, act_space, strategy=strategy)
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
