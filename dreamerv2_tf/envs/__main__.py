"""Checks an environment before training: prints its spaces and its speed with random actions.

    python -m dreamerv2_tf.envs atari_pong --steps 2000 --envs 4 --parallel process

Unless --configs is given, the suite's config block is applied (atari, dmc_vision or crafter), so
the env is the one training would use (e.g. Atari with action_repeat 4). Any other `--key value`
is a config override such as `--render_size 96 96` or `--dmc_fast_render True`.
"""

import argparse
import statistics
import sys
import time

import numpy as np

SUITE_BLOCKS = {'atari': ['atari'], 'dmc': ['dmc_vision'], 'crafter': ['crafter'], 'gym': []}
# Timed steps per run by default: rendering DMC frames is ~50x slower than emulating Atari.
SUITE_STEPS = {'atari': 1000, 'dmc': 100, 'crafter': 300, 'gym': 1000}


def _parser():
    parser = argparse.ArgumentParser(
        prog='python -m dreamerv2_tf.envs', formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__ + '\nSpeeds are agent steps per second summed over all envs (one agent '
        'step = action_repeat frames),\nthe median over the runs, with uniformly random actions.',
        epilog='task names: atari_<game> (atari_pong, atari_james_bond, ...), dmc_<domain>_<task>\n'
        '(dmc_walker_walk, dmc_point_mass_easy, dmc_cup_catch, ...), crafter_reward,\n'
        'crafter_noreward, gym_<gymnasium id> (gym_CartPole-v1, gym_ALE/Pong-v5, ...)')
    parser.add_argument('task', help='task name, e.g. atari_pong or dmc_walker_walk')
    parser.add_argument('--steps', type=int, default=None,
                        help='batched steps per timed run (default 1000; dmc 100, crafter 300)')
    parser.add_argument('--envs', type=int, default=1,
                        help='number of envs stepped together (default 1)')
    parser.add_argument('--parallel', choices=['none', 'thread', 'process'], default=None,
                        help='how the envs run (default: the config, i.e. none)')
    parser.add_argument('--runs', type=int, default=3,
                        help='timed runs; the median is reported (default 3)')
    parser.add_argument('--mode', choices=['train', 'eval'], default='train',
                        help='env mode, which decides the seeds (default train)')
    parser.add_argument('--configs', nargs='+', default=None,
                        help="config blocks to compose (default: the task's suite block)")
    return parser


def main(argv=None):
    from dreamerv2_tf import config as config_lib
    from dreamerv2_tf.envs import make_batch_env, parse_task
    from dreamerv2_tf.envs.tasks import check_installed

    args, overrides = _parser().parse_known_args(argv)
    try:
        task = parse_task(args.task)
        blocks = args.configs if args.configs is not None else SUITE_BLOCKS[task.suite]
        config = config_lib.compose(blocks)
        config = config_lib.parse_flags(config, overrides)
        config = config.update(task=args.task, envs=args.envs)
        if args.parallel:
            config = config.update(envs_parallel=args.parallel)
        check_installed(task)
        steps = args.steps if args.steps is not None else SUITE_STEPS[task.suite]
    except (ValueError, ImportError) as e:  # unknown task, bad flag, missing extra: one line
        print(f'error: {e}', file=sys.stderr)
        return 2

    start = time.perf_counter()
    env = make_batch_env(config, args.mode)
    try:
        print(f'task {args.task}: {len(env)} env(s), parallel {config.envs_parallel}, '
              f'action_repeat {config.action_repeat}, time_limit {config.time_limit}, '
              f'started in {time.perf_counter() - start:.1f} s')
        print('observation space:')
        for key, space in env.obs_space.items():
            print(f'  {key}: {space}')
        print('action space:')
        for key, space in env.act_space.items():
            print(f'  {key}: {space}')
        rates = [_timed_run(env, steps, seed) for seed in range(args.runs)]
        for index, rate in enumerate(rates):
            print(f'run {index}: {rate:.1f} agent steps/s')
        median = statistics.median(rates)
        print(f'median over {len(rates)} runs of {steps} batched steps: {median:.1f} agent '
              f'steps/s ({median / len(env):.1f} per env, {median * config.action_repeat:.1f} '
              'frames/s)')
    finally:
        env.close()
    return 0


def _timed_run(env, steps, seed):
    """Agent steps per second over `steps` batched steps with uniformly random actions."""
    rng = np.random.RandomState(seed)
    count = len(env)
    reset = np.ones(count, bool)
    env.step(None, reset)  # start every episode outside the timed part
    reset[:] = False
    start = time.perf_counter()
    for _ in range(steps):
        action = {key: np.stack([space.sample(rng) for _ in range(count)])
                  for key, space in env.act_space.items()}
        obs = env.step(action, reset)
        reset = obs['is_last']
    return steps * count / (time.perf_counter() - start)


if __name__ == '__main__':
    sys.exit(main())
