"""Eval returns of the original implementation with the `small` sizes beside ours and the paper.

    python benchmarks/learning/dmc_cartpole_balance_dmc_vision_small_original/compare.py

Reads the committed `seed0/metrics.jsonl` of this folder (the original), of
`../dmc_cartpole_balance_dmc_vision_small` (ours, same sizes) and of
`../dmc_cartpole_balance_dmc_vision_cnn16` (ours, full size but CNN depth 16). Prints, for each
evaluation point (2k, 12k, ..., 82k and 90k frames), each run's evaluation nearest to it, and
writes `curves.png` with every evaluation and the paper's five seeds up to 100k frames.

The original logs the random policy's prefill evaluation as `eval_return` at the first step too
(`eval_total_steps` 0 in the same line); ours does not, so that value is left out here.
"""

import json
import pathlib

import numpy as np

from dreamerv2_tf import plot as plotlib

HERE = pathlib.Path(__file__).resolve().parent
RUNS = {
    'original, small': HERE / 'seed0',
    'ours, small': HERE.parent / 'dmc_cartpole_balance_dmc_vision_small' / 'seed0',
    'ours, CNN depth 16': HERE.parent / 'dmc_cartpole_balance_dmc_vision_cnn16' / 'seed0',
}
POINTS = [2e3] + [k * 1e4 + 2e3 for k in range(1, 9)] + [9e4]


def evals(logdir):
    """(frames, returns) of the policy's evaluations, without random-policy ones."""
    frames, returns = [], []
    for line in (logdir / 'metrics.jsonl').read_text().splitlines():
        record = json.loads(line)
        if 'eval_return' in record and record.get('eval_total_steps', 1) > 0:
            frames.append(record['step'])
            returns.append(record['eval_return'])
    return np.array(frames, float), np.array(returns, float)


def main():
    curves = {name: evals(logdir) for name, logdir in RUNS.items()}
    print('| frames | ' + ' | '.join(curves) + ' |')
    print('|' + ' --- |' * (len(curves) + 1))
    for point in POINTS:
        cells = []
        for frames, returns in curves.values():
            # The nearest evaluation within 3k frames (resumes shift them slightly).
            distance = np.abs(frames - point)
            near = len(frames) and distance.min() <= 3e3
            cells.append(f'{returns[np.argmin(distance)]:.0f}' if near else '-')
        print(f'| {point:,.0f} | ' + ' | '.join(cells) + ' |')
    paper = plotlib.paper_curves('dmc_cartpole_balance')
    print('\nPaper (5 seeds, 30k-frame bins): ' + ', '.join(
        f'{x / 1e3:.0f}k: {np.mean(v):.0f} ({min(v):.0f}-{max(v):.0f})'
        for x in (3e4, 6e4, 9e4) for v in [plotlib.paper_values(paper, x, exact=True)]))

    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (frames, returns) in curves.items():
        ax.plot(frames, returns, marker='o', ms=3, label=name)
    for index, (xs, ys) in enumerate(paper):
        keep = xs <= 1e5
        ax.plot(xs[keep], ys[keep], color='black', lw=0.8, alpha=0.5,
                label='paper DreamerV2 (5 seeds)' if index == 0 else None)
    ax.set_xlim(0, 1e5)
    ax.set_xlabel('environment frames')
    ax.set_ylabel('eval return (one episode)')
    ax.set_title('DMC cartpole balance from pixels')
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / 'curves.png', dpi=80)
    print(f'Wrote {HERE / "curves.png"}.')


if __name__ == '__main__':
    main()
