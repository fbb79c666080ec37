"""Eval returns of the original implementation beside ours and the paper, from committed logs.

    python benchmarks/learning/compare_original.py --frames 9e4 \
        --title 'DMC cartpole balance from pixels' \
        --out benchmarks/learning/dmc_cartpole_balance_dmc_vision_small_original/curves.png \
        'original, small=benchmarks/learning/dmc_cartpole_balance_dmc_vision_small_original' \
        'ours, small=benchmarks/learning/dmc_cartpole_balance_dmc_vision_small'

Each run is `label=folder`, the folder holding `seed<i>/metrics.jsonl`. For each evaluation point
(2k, 12k, ... frames, and `--frames`) the table gives each seed's evaluation nearest to it: the
value for one seed, `mean (min-max)` for several. The PNG has every evaluation of every seed and
the paper's five pixel seeds up to `--frames`.

The original logs the random prefill policy's evaluation as `eval_return` at the first step too
(`eval_total_steps` 0 in the same line); ours does not, so that value is left out here.
"""

import argparse
import json
import pathlib

import numpy as np

from dreamerv2_tf import plot as plotlib


def evals(logdir):
    """(frames, returns) of the policy's evaluations, without random-policy ones."""
    frames, returns = [], []
    for line in (logdir / 'metrics.jsonl').read_text().splitlines():
        record = json.loads(line)
        if 'eval_return' in record and record.get('eval_total_steps', 1) > 0:
            frames.append(record['step'])
            returns.append(record['eval_return'])
    return np.array(frames, float), np.array(returns, float)


def nearest(frames, returns, point):
    """The evaluation within 3k frames of `point` (resumes shift them slightly), else None."""
    if not len(frames) or np.abs(frames - point).min() > 3e3:
        return None
    return returns[np.argmin(np.abs(frames - point))]


def cell(values):
    values = [v for v in values if v is not None]
    if not values:
        return '-'
    if len(values) == 1:
        return f'{values[0]:.0f}'
    return f'{np.mean(values):.0f} ({min(values):.0f}-{max(values):.0f})'


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('runs', nargs='+', help='label=folder with seed<i>/metrics.jsonl')
    parser.add_argument('--frames', type=float, required=True, help='last frame count to show')
    parser.add_argument('--title', required=True)
    parser.add_argument('--out', type=pathlib.Path, required=True, help='PNG to write')
    args = parser.parse_args()

    runs = {}
    for spec in args.runs:
        label, _, folder = spec.partition('=')
        seeds = sorted(pathlib.Path(folder).glob('seed*/metrics.jsonl'))
        if not seeds:
            parser.error(f'{folder} holds no seed*/metrics.jsonl')
        runs[label] = [evals(path.parent) for path in seeds]

    points = list(np.arange(2e3, args.frames, 1e4)) + [args.frames]
    print('| frames | ' + ' | '.join(runs) + ' |')
    print('|' + ' --- |' * (len(runs) + 1))
    for point in points:
        cells = [cell([nearest(*curve, point) for curve in curves]) for curves in runs.values()]
        print(f'| {point:,.0f} | ' + ' | '.join(cells) + ' |')
    paper = plotlib.paper_curves('dmc_cartpole_balance')
    print('\nPaper, pixels (5 seeds, 30k-frame bins): ' + ', '.join(
        f'{x / 1e3:.0f}k: {np.mean(v):.0f} ({min(v):.0f}-{max(v):.0f})'
        for x in (3e4, 6e4, 9e4) for v in [plotlib.paper_values(paper, x, exact=True)]))

    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for index, (label, curves) in enumerate(runs.items()):
        for seed, (frames, returns) in enumerate(curves):
            ax.plot(frames, returns, marker='o', ms=3, color=f'C{index}',
                    label=label if seed == 0 else None)
    for index, (xs, ys) in enumerate(paper):
        keep = xs <= args.frames * 1.12
        ax.plot(xs[keep], ys[keep], color='black', lw=0.8, alpha=0.5,
                label='paper DreamerV2, pixels (5 seeds)' if index == 0 else None)
    ax.set_xlim(0, args.frames * 1.12)
    ax.set_xlabel('environment frames')
    ax.set_ylabel('eval return (one episode)')
    ax.set_title(args.title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=80)
    print(f'Wrote {args.out}.')


if __name__ == '__main__':
    main()
