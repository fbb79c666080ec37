"""Does a larger discount loss scale teach a CartPole run's discount head where episodes end?

    python benchmarks/learning/cartpole_probes/discount_scale.py LOGDIR [UPDATES] [SCALE ...]

For each SCALE (default 1 and 5; DreamerV2 uses 5 for Atari), restores LOGDIR's latest
checkpoint (networks only, a fresh optimizer), trains the world model alone for UPDATES
(default 300) batches drawn from the run's own replay (`train_episodes/`, with the run's
capacity, lengths and sampling), and prints the discount head's continuation on the observed
terminal and non-terminal steps of the replay's last 10 episodes that ended before 500 steps,
and how many of the sampled steps were terminal.
The target is 0 on a terminal step and the discount (0.99) elsewhere. Both arms start from
the same weights, batches and seeds, so only the scale differs.
"""

import glob
import pathlib
import sys

import numpy as np
import tensorflow as tf

from discount_drift import observe, restore  # beside this file
from dreamerv2_tf.run.replay import Replay, load_episode


def continuation(world_model, episodes):
    """Continuation on the terminal steps and the mean on the non-terminal steps."""
    terminal, other = [], []
    discount = world_model.heads['discount']
    for episode in episodes:
        data = world_model.preprocess({k: tf.constant(v[None]) for k, v in episode.items()})
        _, feat = observe(world_model, data)
        cont = discount(feat).mean().numpy()[0]
        last = episode['is_terminal'].astype(bool)
        terminal.extend(cont[last].tolist())
        other.append(cont[~last])
    return np.array(terminal), np.concatenate(other)


def main(logdir, updates=300, *scales):
    logdir, updates = pathlib.Path(logdir), int(updates)
    scales = scales or (1.0, 5.0)
    files = sorted(glob.glob(str(logdir / 'train_episodes' / '*.npz')))
    ended = [e for e in map(load_episode, files) if e['is_terminal'][-1]][-10:]
    print(f'{logdir}: {len(ended)} episodes that ended before 500 steps, lengths '
          f'{[len(e["reward"]) - 1 for e in ended]}')
    for scale in scales:
        config, restored = restore(logdir, **{'loss_scales.discount': float(scale)})
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
        for name, (terminal, other) in (('before', before), (f'after {updates} updates', after)):
            print(f'  scale {scale:g}, {name}: continuation on terminal steps mean '
                  f'{terminal.mean():.3f} (max {terminal.max():.3f}), on other steps mean '
                  f'{other.mean():.3f} (min {other.min():.3f})')
        print(f'  scale {scale:g}: last discount_loss {float(metrics["discount_loss"]):.4f}; '
              f'terminal steps in the batches: {terminals} of {steps} ({terminals / steps:.2%})')


if __name__ == '__main__':
    main(sys.argv[1], *[float(a) for a in sys.argv[2:]])
