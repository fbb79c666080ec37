"""Why CartPole eval episodes end: the cart left the track, the pole fell, or 500 steps passed.

    python benchmarks/learning/cartpole_probes/episode_ends.py DIR [DIR ...]

Each DIR holds a run's `eval_episodes/*.npz` (a training logdir or a copy of it). CartPole-v1's
`vector` observation is (cart position, cart velocity, pole angle, pole angular velocity); an
episode ends when |position| > 2.4, |angle| > 12 degrees, or after 500 steps. Episodes of fewer
than 20 steps (the untrained policy's) are left out.
"""

import math
import pathlib
import sys

import numpy as np

POSITION_LIMIT = 2.4
ANGLE_LIMIT = 12 * 2 * math.pi / 360
MAX_STEPS = 500


def ending(vector):
    """'500 steps', 'cart off the track' or 'pole fell' for one episode's observations (the
    first row is the reset observation)."""
    steps = len(vector) - 1
    position, _, angle, _ = vector[-1]
    if steps >= MAX_STEPS:
        return '500 steps'
    if abs(position) > POSITION_LIMIT:
        return 'cart off the track'
    if abs(angle) > ANGLE_LIMIT:
        return 'pole fell'
    return 'other'


def main(dirs):
    counts = {}
    for folder in dirs:
        for path in sorted(pathlib.Path(folder).glob('eval_episodes/*.npz')):
            with np.load(path, allow_pickle=False) as episode:
                vector = episode['vector']
            if len(vector) - 1 < 20:
                continue
            kind = ending(vector)
            counts[kind] = counts.get(kind, 0) + 1
            print(f'{path.parent.parent.name}/{path.name}: {len(vector) - 1} steps, {kind}, '
                  f'final position {vector[-1][0]:+.2f}, angle {vector[-1][2]:+.3f}')
    total = sum(counts.values())
    print(f'{total} episodes: ' + ', '.join(f'{n} {kind}' for kind, n in sorted(counts.items())))


if __name__ == '__main__':
    main(sys.argv[1:])
