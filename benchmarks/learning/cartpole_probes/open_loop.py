"""Does a CartPole run's world model foresee the falls its own policy makes?

    python benchmarks/learning/cartpole_probes/open_loop.py LOGDIR [EPISODES] [CONTEXT]

Restores LOGDIR's latest checkpoint and takes its last EPISODES (default 8) train episodes. For
each one, the RSSM observes the first CONTEXT (default 10) steps. It then imagines the rest
open loop with the actions that were really taken. Printed per episode: the real and the
predicted pole angle at the last step, the predicted continuation (discount head) at the last
step, the continuation on the observed last step, and the critic's value of the observed state
CONTEXT steps before the end (with CartPole's reward of 1, tanh-transformed, the true discounted
return from there is under 0.77 * CONTEXT). If the model
predicts an upright pole and a continuation near 1 where the real pole fell, the actor was
trained on imagined futures in which its falls do not happen.
"""

import glob
import pathlib
import sys

import numpy as np
import tensorflow as tf

from discount_drift import observe, restore  # beside this file
from dreamerv2_tf.run.replay import load_episode

ANGLE = 2  # CartPole-v1's vector: position, velocity, angle, angular velocity


def main(logdir, count=8, context=10):
    logdir = pathlib.Path(logdir)
    _, restored = restore(logdir)
    world_model, behavior = restored.agent.wm, restored.agent.behaviors['task']
    decoder, discount = world_model.heads['decoder'], world_model.heads['discount']
    seed = tf.constant([1, 2], tf.int64)
    print(f'{logdir}: checkpoint at step {restored.step}, observe {context} steps, then '
          f'imagine with the real actions')
    print('  steps | ending      | real angle | predicted angle | continuation predicted | '
          f'observed | critic {context} steps before the end')
    files = sorted(glob.glob(str(logdir / 'train_episodes' / '*.npz')))[-count:]
    for path in files:
        episode = load_episode(path)
        data = world_model.preprocess({k: tf.constant(v[None]) for k, v in episode.items()})
        length = len(episode['reward'])
        if length <= 2 * context:
            continue
        embed = world_model.encoder(data)
        states, _ = world_model.rssm.observe(embed[:, :context], data['action'][:, :context],
                                             data['is_first'][:, :context], None, seed)
        start = {k: v[:, -1] for k, v in states.items()}
        prior = world_model.rssm.imagine(data['action'][:, context:], start, seed)
        feat = world_model.rssm.get_feat(prior)
        angle = decoder(feat)['vector'].mode().numpy()[0, -1, ANGLE]
        cont = discount(feat).mean().numpy()[0, -1]
        # The critic on the observed (posterior) state `context` steps before the end.
        _, full_feat = observe(world_model, data)
        value = behavior.critic(full_feat).mode().numpy()[0, -context]
        observed = discount(full_feat).mean().numpy()[0, -1]
        real = episode['vector'][-1, ANGLE]
        ending = 'terminal' if episode['is_terminal'][-1] else 'time limit'
        print(f'  {length - 1:5d} | {ending:11s} | {real:+10.3f} | {angle:+15.3f} | '
              f'{cont:22.3f} | {observed:8.3f} | {value:.1f}')


if __name__ == '__main__':
    main(sys.argv[1], *[int(a) for a in sys.argv[2:]])
