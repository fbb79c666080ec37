"""Runs the eval policy of a trained agent without training and prints the returns.

    python -m dreamerv2_tf.evaluate --logdir runs/pong --episodes 10 [--video out.gif]
    python -m dreamerv2_tf.evaluate --policy export/models/pong/3000/policy.tflite

`--logdir` is a training logdir (the latest checkpoint is used) or an exported SavedModel
(`export/models/pong` or one of its version folders). `--policy` is an exported policy in any
format: a SavedModel folder, `policy.onnx` (run by onnxruntime) or `policy.tflite` (run by
ai-edge-litert; neither loads TensorFlow), so an export's returns can be checked before it is
deployed. Episodes come from the config's task with evaluation seeds; `--seed` changes them (and
the noise that ONNX and TFLite policies draw, which otherwise comes from the config's seed).
"""

import argparse
import pathlib
import statistics
import sys
import time

import numpy as np

from dreamerv2_tf.protocol import is_model_input


def parse(argv):
    parser = argparse.ArgumentParser(
        prog='python -m dreamerv2_tf.evaluate', description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split('\n\n', 1)[1])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--logdir', help='training logdir or SavedModel directory to evaluate')
    source.add_argument('--policy', help='exported policy to evaluate: SavedModel directory, '
                                         '.onnx or .tflite file')
    parser.add_argument('--episodes', type=int, default=10, help='episodes to run (default 10)')
    parser.add_argument('--video', help='write the episodes to this .gif or .mp4 file')
    parser.add_argument('--seed', type=int, help='environment seed (default: the config seed)')
    parser.add_argument('--mode', choices=('eval', 'train'), default='eval',
                        help='eval: deterministic actions (default); train: sampled actions')
    parser.add_argument('--task', help='evaluate on another task than the trained one')
    parser.add_argument('--precision', type=int, choices=(32, 16), default=32,
                        help='compute precision for a logdir (default 32: float16 is slow on CPUs)')
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error('--episodes must be at least 1')
    if args.video and pathlib.Path(args.video).suffix.lower() not in ('.gif', '.mp4'):
        parser.error('--video must end in .gif or .mp4')
    return args


def load_exported(path, args):
    """(policy, config) for an exported policy, or (None, None) for a training logdir. ONNX and
    TFLite files load without TensorFlow."""
    from dreamerv2_tf import config as configlib
    from dreamerv2_tf.serving import portable
    if portable.detect(path):
        policy = portable.load(path, seed=args.seed)
        return policy, configlib.Config(configlib.load_yaml(policy.metadata['config']))
    from dreamerv2_tf.serving.load import SavedModelPolicy, find_saved_model
    saved_model = find_saved_model(path)
    if saved_model is None:
        if args.policy:
            raise ValueError(f'{path} is not a SavedModel, .onnx or .tflite file')
        return None, None
    policy = SavedModelPolicy(saved_model)
    return policy, policy.config


def make_policy(path, args):
    """(policy, config, env) for a logdir or an exported policy."""
    from dreamerv2_tf import envs

    policy, config = load_exported(path, args)
    if policy is None:
        from dreamerv2_tf.serving.load import load_config
        config = load_config(path)
    overrides = {'envs': 1, 'envs_parallel': 'none', 'jit': True}
    if policy is None:
        overrides['precision'] = args.precision
    if args.seed is not None:
        overrides['seed'] = args.seed
    if args.task:
        overrides['task'] = args.task
    config = config.update(overrides)
    env = envs.make_env(config, 'eval')
    if policy is None:
        from dreamerv2_tf.serving.load import CheckpointPolicy
        policy = CheckpointPolicy(path, config, env.obs_space, env.act_space)
    return policy, config, env


def run_episode(env, policy, mode):
    obs = env.reset()
    frames = [obs.get('image')]
    state = policy.initial_state(1)
    total = 0.0
    length = 0
    while True:
        batch = {k: np.asarray(v)[None] for k, v in obs.items() if is_model_input(k)}
        action, state = policy(batch, state, mode)
        obs = env.step({'action': action[0]})
        frames.append(obs.get('image'))
        total += float(obs['reward'])
        length += 1
        if obs['is_last']:
            return total, length, frames


def write_video(path, frames, fps=30):
    from dreamerv2_tf.run.logger import encode_gif
    frames = np.stack(frames)
    if path.suffix.lower() == '.gif':
        path.write_bytes(encode_gif(frames, fps))
        return
    try:
        import imageio.v2 as imageio
        imageio.mimwrite(path, frames[..., 0] if frames.shape[-1] == 1 else frames, fps=fps,
                         macro_block_size=1)
    except (ImportError, ValueError, RuntimeError) as e:
        raise SystemExit(f'error: cannot write {path}: {e}; install imageio-ffmpeg or use .gif')


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    path = pathlib.Path(args.logdir or args.policy).expanduser()
    if not path.exists():
        print(f'error: {path} does not exist', file=sys.stderr)
        return 2
    try:
        policy, config, env = make_policy(path, args)
    except (ValueError, ImportError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(f'Evaluating {policy.path} (step {policy.step}) on {config.task}, {args.episodes} episodes, '
          f'{args.mode} actions.', flush=True)
    returns, frames = [], []
    try:
        for index in range(args.episodes):
            start = time.perf_counter()
            score, length, episode_frames = run_episode(env, policy, args.mode)
            returns.append(score)
            if args.video and episode_frames[0] is not None:
                frames += episode_frames
            print(f'Episode {index + 1}/{args.episodes}: return {score:.1f}, {length} steps, '
                  f'{time.perf_counter() - start:.1f} s', flush=True)
    finally:
        env.close()
    std = statistics.pstdev(returns) if len(returns) > 1 else 0.0
    print(f'Return over {len(returns)} episodes: mean {statistics.mean(returns):.2f}, '
          f'std {std:.2f}, min {min(returns):.1f}, max {max(returns):.1f}')
    if args.video:
        write_video(pathlib.Path(args.video), frames)
        print(f'Wrote {args.video} ({len(frames)} frames).')
    return 0


if __name__ == '__main__':
    sys.exit(main())
