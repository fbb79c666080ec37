"""Which loss scale teaches a CartPole run's discount head where episodes end?

    python benchmarks/learning/cartpole_probes/discount_scale.py LOGDIR [UPDATES] [ARM ...]

An ARM is a number, the discount loss scale (default arms 1 and 5; DreamerV2 uses 5 for Atari),
or KEY=VALUE for any other config key (`loss_scales.proprio=100`, `loss_scales.kl=0.1`). For each
arm, restores LOGDIR's latest checkpoint (networks only, a fresh optimizer), trains the world
model alone for UPDATES (default 300) batches drawn from the run's own replay (`train_episodes/`,
with the run's capacity, lengths and sampling), and prints the discount head's continuation on
the observed terminal and non-terminal steps of the replay's last 10 episodes that ended before
500 steps, how far the decoder's cart position and pole angle are from the real ones on those
terminal steps, and how many of the sampled steps were terminal.
The target is 0 on a terminal step and the discount (0.99) elsewhere. Every arm starts from
the same weights, batches and seeds, so only the arm's setting differs.
"""

import glob
import pathlib
import sys

import numpy as np
import tensorflow as tf

from discount_drift import observe, restore  # beside this file
from dreamerv2_tf.run.replay import Replay, load_episode


def continuation(world_model, episodes):
    """Continuation on the terminal steps, on the non-terminal steps, and the decoder's absolute
    error of cart position and pole angle [N, 2] on the terminal steps."""
    terminal, other, error = [], [], []
    discount, decoder = world_model.heads['discount'], world_model.heads['decoder']
    for episode in episodes:
        data = world_model.preprocess({k: tf.constant(v[None]) for k, v in episode.items()})
        _, feat = observe(world_model, data)
        cont = discount(feat).mean().numpy()[0]
        last = episode['is_terminal'].astype(bool)
        terminal.extend(cont[last].tolist())
        other.append(cont[~last])
        vector = decoder(feat)['vector'].mode().numpy()[0]
        error.append(np.abs(vector - episode['vector'])[last][:, [0, 2]])
    return np.array(terminal), np.concatenate(other), np.concatenate(error)


def arm(text):
    """('loss_scales.discount', 5.0) from '5', (key, value) from 'key=value'."""
    key, _, value = text.rpartition('=')
    return key or 'loss_scales.discount', float(value)


def main(logdir, updates=300, *arms):
    logdir, updates = pathlib.Path(logdir), int(updates)
    arms = [arm(a) for a in arms or ('1', '5')]
    files = sorted(glob.glob(str(logdir / 'train_episodes' / '*.npz')))
    ended = [e for e in map(load_episode, files) if e['is_terminal'][-1]][-10:]
    print(f'{logdir}: {len(ended)} episodes that ended before 500 steps, lengths '
          f'{[len(e["reward"]) - 1 for e in ended]}')
    for key, value in arms:
        config, restored = restore(logdir, **{key: value})
        name = f'scale {value:g}' if key == 'loss_scales.discount' else f'{key}={value:g}'
        agent = restored.agent
        before = continuation(agent.wm, ended)
        replay = Replay(logdir / 'train_episodes', config.replay.capacity, config.replay.minlen,
                        config.replay.maxlen, config.replay.prioritize_ends, seed=0)
        batches = iter(replay.dataset(config.dataset.batch, config.dataset.length, prefetch=0))
        train = tf.function(agent.wm.train)
        state = agent.initial_train_state(config.dataset.batch)
        terminals = steps = 0
        for i in range(updates):
            sample = next(batches)
            terminals += int(sample['is_terminal'].numpy().sum())
            steps += int(sample['is_terminal'].numpy().size)
            batch = agent.inputs(sample, 'action')
            state, _, metrics = train(batch, state, tf.constant([i, 7], tf.int64))
        after = continuation(agent.wm, ended)
        for when, (terminal, other, error) in (('before', before),
                                               (f'after {updates} updates', after)):
            print(f'  {name}, {when}: continuation on terminal steps mean '
                  f'{terminal.mean():.3f} (max {terminal.max():.3f}), on other steps mean '
                  f'{other.mean():.3f} (min {other.min():.3f}); decoder error on terminal '
                  f'steps: position {error[:, 0].mean():.3f}, angle {error[:, 1].mean():.3f}')
        print(f'  {name}: last discount_loss {float(metrics["discount_loss"]):.4f}; '
              f'terminal steps in the batches: {terminals} of {steps} ({terminals / steps:.2%})')


if __name__ == '__main__':
    main(sys.argv[1], *sys.argv[2:])
