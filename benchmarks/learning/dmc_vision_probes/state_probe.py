"""Does the world model of a pixel cartpole run know the cart and pole state?

    python benchmarks/learning/dmc_vision_probes/state_probe.py LOGDIR [EPISODES]

Restores LOGDIR's latest checkpoint and observes its last EPISODES (default 12) train episodes
whole. dm_control stores the true state beside each image (`position`: cart x, cos and sin of the
pole angle; `velocity`: cart and pole velocity), which a pixel agent never reads. A ridge
regression from the posterior features to that state is fitted on the first half of the
episodes and scored (R^2) on the second half: on posterior states, and on prior states imagined
k steps open loop from a posterior with the recorded actions, as imagination feeds them to the
actor and critic. The same is done for the reward head against the real rewards. Velocities a
model cannot read off one frame show whether the RSSM carries them.
"""

import glob
import pathlib
import sys

import numpy as np
import tensorflow as tf

from dreamerv2_tf import envs
from dreamerv2_tf.run.replay import load_episode
from dreamerv2_tf.serving.load import CheckpointPolicy, load_config

NAMES = ['cart x', 'cos angle', 'sin angle', 'cart vel', 'pole vel']
HORIZONS = (1, 5, 15)
STRIDE = 10  # open-loop starts every STRIDE steps


def ridge(x, y, alpha=1.0):
    """Weights [F + 1, D] of a ridge regression with a bias column."""
    x = np.concatenate([x, np.ones((len(x), 1))], 1)
    return np.linalg.solve(x.T @ x + alpha * np.eye(x.shape[1]), x.T @ y)


def r2(weights, x, y):
    pred = np.concatenate([x, np.ones((len(x), 1))], 1) @ weights
    return 1 - ((y - pred) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)


def main(logdir, count=12):
    logdir = pathlib.Path(logdir)
    config = load_config(logdir).update({'envs': 1, 'envs_parallel': 'none'})
    env = envs.make_env(config, 'eval')
    restored = CheckpointPolicy(logdir, config, env.obs_space, env.act_space)
    env.close()
    world_model = restored.agent.wm
    rssm, reward_head = world_model.rssm, world_model.heads['reward']
    files = sorted(glob.glob(str(logdir / 'train_episodes' / '*.npz')))[-count:]
    rows = {'posterior': [], **{f'prior +{k}': [] for k in HORIZONS}}
    for path in files:
        episode = load_episode(path)
        state = np.concatenate([episode['position'], episode['velocity']], -1)
        data = world_model.preprocess({k: tf.constant(v[None]) for k, v in episode.items()})
        post, _ = rssm.observe(world_model.encoder(data), data['action'], data['is_first'],
                               None, tf.constant((1, 2), tf.int64))
        feat = rssm.get_feat(post)[0]
        rows['posterior'].append((feat.numpy(), state, reward_head(feat).mode().numpy(),
                                  episode['reward']))
        starts = np.arange(STRIDE, len(state) - max(HORIZONS), STRIDE)
        start = {k: tf.gather(v[0], starts) for k, v in post.items()}
        actions = np.stack([episode['action'][t + 1:t + 1 + max(HORIZONS)] for t in starts])
        prior = rssm.imagine(tf.constant(actions), start, tf.constant((3, 4), tf.int64))
        prior_feat = rssm.get_feat(prior)
        for k in HORIZONS:
            f = prior_feat[:, k - 1]
            rows[f'prior +{k}'].append((f.numpy(), state[starts + k],
                                        reward_head(f).mode().numpy(),
                                        episode['reward'][starts + k]))
    half = len(files) // 2
    train_x = np.concatenate([r[0] for r in rows['posterior'][:half]])
    train_y = np.concatenate([r[1] for r in rows['posterior'][:half]])
    weights = ridge(train_x.astype(np.float64), train_y.astype(np.float64))
    print(f'{logdir}: checkpoint at step {restored.step} ({2 * restored.step} frames at action '
          f'repeat 2); fit on {half} episodes, scored on {len(files) - half}')
    print(f'  {"states":<11} | ' + ' | '.join(f'{n:>9}' for n in NAMES)
          + ' | reward MAE | reward mean (real)')
    for name, parts in rows.items():
        test = parts[half:]
        x = np.concatenate([p[0] for p in test]).astype(np.float64)
        y = np.concatenate([p[1] for p in test]).astype(np.float64)
        pred_reward = np.concatenate([p[2] for p in test])
        real_reward = np.concatenate([p[3] for p in test])
        scores = r2(weights, x, y)
        print(f'  {name:<11} | ' + ' | '.join(f'{s:9.3f}' for s in scores)
              + f' | {np.abs(pred_reward - real_reward).mean():10.3f} | '
              f'{pred_reward.mean():.3f} ({real_reward.mean():.3f})')


if __name__ == '__main__':
    main(sys.argv[1], *[int(a) for a in sys.argv[2:]])
