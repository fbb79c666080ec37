"""Does the discount head miss observed falls because of the posterior's latent?

    python benchmarks/learning/cartpole_probes/posterior_prior.py LOGDIR [EPISODES]

Restores LOGDIR's latest checkpoint and observes its last EPISODES (default 8) train episodes
whole. For the last 3 steps of each, it prints the real cart position and pole angle, those the
decoder reads from the posterior state (which has seen the step's observation) and from the
prior state (the one-step prediction, which has not; its latent is sampled as in imagination),
and the discount head's continuation on each. Training fits the head on posterior states;
imagination feeds it prior states. CartPole-v1 ends when |position| > 2.4 or |angle| > 0.2095.
"""

import glob
import pathlib
import sys

import numpy as np
import tensorflow as tf

from discount_drift import restore  # beside this file
from dreamerv2_tf.run.replay import load_episode

POSITION, ANGLE = 0, 2  # CartPole-v1's vector: position, velocity, angle, angular velocity


def main(logdir, count=8):
    logdir = pathlib.Path(logdir)
    _, restored = restore(logdir)
    world_model = restored.agent.wm
    rssm, decoder, discount = world_model.rssm, world_model.heads['decoder'], \
        world_model.heads['discount']
    print(f'{logdir}: checkpoint at step {restored.step}')
    print('  steps | to end | real x, angle  | posterior x, angle | cont | '
          'prior x, angle | cont')
    nonterminal = {'posterior': [], 'prior': []}
    files = sorted(glob.glob(str(logdir / 'train_episodes' / '*.npz')))[-count:]
    for path in files:
        episode = load_episode(path)
        data = world_model.preprocess({k: tf.constant(v[None]) for k, v in episode.items()})
        # One pass gives both: the prior of each step comes from the posterior's deter.
        post, prior = rssm.observe(world_model.encoder(data), data['action'], data['is_first'],
                                   None, tf.constant((1, 2), tf.int64))
        post_feat = rssm.get_feat(post)
        prior['stoch'] = tf.cast(rssm.get_dist(prior).sample(seed=tf.constant((5, 6), tf.int64)),
                                 post['stoch'].dtype)
        prior_feat = rssm.get_feat(prior)
        rows = {}
        for name, feat in (('posterior', post_feat), ('prior', prior_feat)):
            vector = decoder(feat)['vector'].mode().numpy()[0]
            cont = discount(feat).mean().numpy()[0]
            rows[name] = vector, cont
            nonterminal[name].append(cont[1:-1])  # the reset step has no prior
        length = len(episode['reward'])
        real = episode['vector']
        for t in range(length - 3, length):
            (pv, pc), (qv, qc) = rows['posterior'], rows['prior']
            print(f'  {length - 1:5d} | {t - length + 1:6d} | {real[t, POSITION]:+5.2f}, '
                  f'{real[t, ANGLE]:+6.3f} | {pv[t, POSITION]:+9.2f}, {pv[t, ANGLE]:+6.3f} | '
                  f'{pc[t]:.2f} | {qv[t, POSITION]:+5.2f}, {qv[t, ANGLE]:+6.3f} | {qc[t]:.2f}'
                  + ('' if episode['is_terminal'][t] or t < length - 1 else '  (time limit)'))
    for name, values in nonterminal.items():
        values = np.concatenate(values)
        print(f'  {name}: continuation on the steps before the last: mean {values.mean():.3f}, '
              f'min {values.min():.3f}')


if __name__ == '__main__':
    main(sys.argv[1], *[int(a) for a in sys.argv[2:]])
