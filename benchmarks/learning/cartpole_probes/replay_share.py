"""Which episodes a CartPole run's replay held, as the sampler sees them: DreamerV2 picks an
episode uniformly (spec 4.3), so the share of *episodes* that are short is the share of training
windows drawn from them. For each seed folder (a metrics.jsonl with train_length lines) and a
few agent steps, prints the loaded episodes, the share shorter than 150 steps and how many ended
before CartPole's 500-step limit, for the whole history (capacity 2e6, never reached) or the
newest --capacity steps (FIFO eviction, spec 4.2).

    python benchmarks/learning/cartpole_probes/replay_share.py \\
        benchmarks/learning/gym_CartPole-v1_cartpole_v11/seed{0,1,2} --capacity 5000
"""

import argparse
import json
import pathlib


def loaded(lengths, step, capacity):
    """Lengths of the episodes held at `step`: newest first until `capacity` steps."""
    held, total = [], 0
    for end, length in reversed([(e, n) for e, n in lengths if e <= step]):
        if capacity and held and total + length > capacity:
            break
        held.append(length)
        total += length
    return held


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('seeds', nargs='+', type=pathlib.Path)
    parser.add_argument('--capacity', type=int, default=0, help='replay capacity in steps')
    parser.add_argument('--steps', type=int, nargs='+', default=[3000, 6000, 9000, 12000, 15000])
    parser.add_argument('--short', type=int, default=150, help='episodes shorter than this')
    args = parser.parse_args()
    for folder in args.seeds:
        lines = [json.loads(l) for l in (folder / 'metrics.jsonl').read_text().splitlines()]
        lengths = [(r['step'], int(r['train_length'])) for r in lines if 'train_length' in r]
        cells = []
        for step in args.steps:
            held = loaded(lengths, step, args.capacity)
            short = sum(n < args.short for n in held)
            ended = sum(n < 500 for n in held)  # the pole fell or the cart left the track
            cells.append(f'{step // 1000}k: {len(held)} eps, {short / max(len(held), 1):.0%} '
                         f'short, {ended} ended before 500')
        print(f'{folder}: ' + ' | '.join(cells))


if __name__ == '__main__':
    main()
