"""What the world model of a CartPole run predicts for whole real episodes.

    python benchmarks/learning/cartpole_probes/discount_drift.py LOGDIR [EPISODES]

Restores LOGDIR's latest checkpoint, observes its last EPISODES (default 6) train episodes from
a zero state, once whole and once in the 16-step chunks that training used, and prints the
discount head's continuation probability on the non-terminal and the terminal steps, the actor's
entropy and the critic's value on the observed states, and the mean continuation per imagined
step from the last observed states.
"""

import glob
import pathlib
import sys

import numpy as np
import tensorflow as tf

from dreamerv2_tf import envs
from dreamerv2_tf.run.replay import load_episode
from dreamerv2_tf.serving.load import CheckpointPolicy, load_config


def restore(logdir, **overrides):
    """(config, CheckpointPolicy) of a CartPole logdir's latest checkpoint, one env, no workers."""
    config = load_config(logdir).update({'envs': 1, 'envs_parallel': 'none', **overrides})
    env = envs.make_env(config, 'eval')
    return config, CheckpointPolicy(logdir, config, env.obs_space, env.act_space)


def observe(world_model, data, seed=(1, 2)):
    states, _ = world_model.rssm.observe(world_model.encoder(data), data['action'],
                                         data['is_first'], None, tf.constant(seed, tf.int64))
    return states, world_model.rssm.get_feat(states)


def main(logdir, count=6):
    logdir = pathlib.Path(logdir)
    config, restored = restore(logdir)
    agent = restored.agent
    world_model, behavior = agent.wm, agent.behaviors['task']
    discount = world_model.heads['discount']
    files = sorted(glob.glob(str(logdir / 'train_episodes' / '*.npz')))[-count:]
    whole, chunked, terminal, entropy, value = [], [], [], [], []
    for path in files:
        episode = load_episode(path)
        data = world_model.preprocess({k: tf.constant(v[None]) for k, v in episode.items()})
        states, feat = observe(world_model, data)
        cont = discount(feat).mean().numpy()[0]
        last = episode['is_terminal'].astype(bool)
        whole.append(cont[~last])
        terminal.append(cont[last])
        entropy.append(behavior.actor(feat).entropy().numpy()[0])
        value.append(behavior.critic(feat).mode().numpy()[0])
        for start in range(0, len(cont) - 16 + 1, 16):
            chunk = {k: v[:, start:start + 16] for k, v in data.items()}
            chunk['is_first'] = tf.constant([[True] + [False] * 15])  # a sampled chunk's start
            _, feat16 = observe(world_model, chunk)
            cont16 = discount(feat16).mean().numpy()[0]
            chunked.append(cont16[~last[start:start + 16]])
    seq = world_model.imagine(behavior.actor, states, data['is_terminal'],
                              config.imag_horizon, tf.constant([3, 4], tf.int64))
    whole, chunked = np.concatenate(whole), np.concatenate(chunked)
    print(f'{logdir}: step {restored.step}, dataset length {config.dataset.length}, '
          f'last {len(files)} train episodes of lengths {[len(np.load(f)["reward"]) for f in files]}')
    print(f'  continuation on non-terminal steps, whole episodes: mean {whole.mean():.3f}, '
          f'share below 0.5: {np.mean(whole < 0.5):.1%}')
    print(f'  continuation on non-terminal steps, 16-step chunks: mean {chunked.mean():.3f}, '
          f'share below 0.5: {np.mean(chunked < 0.5):.1%}')
    print(f'  continuation on terminal steps: {np.round(np.concatenate(terminal), 3).tolist()}')
    print(f'  actor entropy {np.concatenate(entropy).mean():.3f} nats, '
          f'critic {np.concatenate(value).mean():.1f}')
    print(f'  imagined continuation per step: '
          f'{np.round(seq["discount"].numpy().mean(1), 3).tolist()}')


if __name__ == '__main__':
    main(sys.argv[1], *[int(a) for a in sys.argv[2:]])
