"""Learning curves of your runs next to the paper's (spec 15).

    python -m dreamerv2_tf.plot runs/pong runs/pong_seed1 [--out plots] [--metric eval_return]

Each run's `metrics.jsonl` is binned over environment frames like the paper's score files (bins
(start, stop], the right border as x; by default 1e6 frames for Atari, 1e4 for DMC and Crafter,
1e5 otherwise), runs of one task are drawn in one panel with the paper's DreamerV2 curves (mean and
standard deviation over its seeds) and, for Atari, the random and human baselines. Writes
`<out>/curves.png` and `<out>/runs.json` (the schema of `scores/*.json`) and prints a table of
your latest value beside the paper's at the same frames.
"""

import argparse
import json
import pathlib
import sys

import numpy as np

BINS = {'atari': 1e6, 'dmc': 1e4, 'crafter': 1e4}


def scores_dir():
    here = pathlib.Path(__file__).resolve().parent
    for candidate in (here.parent / 'scores', here / 'scores'):
        if (candidate / 'baselines.json').exists():
            return candidate
    return None


def load_run(logdir, metric):
    """(task, steps, values) of one training logdir."""
    import pandas
    from dreamerv2_tf.config import Config
    logdir = pathlib.Path(logdir)
    task = Config.load(logdir / 'config.yaml').task
    frame = pandas.read_json(logdir / 'metrics.jsonl', lines=True)
    if metric not in frame:
        return task, np.zeros(0), np.zeros(0)
    frame = frame[['step', metric]].dropna()
    return task, frame['step'].to_numpy(float), frame[metric].to_numpy(float)


def binned(steps, values, size):
    """Means of `values` in bins (k * size, (k + 1) * size] of `steps`, at the right borders;
    empty bins are left out."""
    if not len(steps):
        return np.zeros(0), np.zeros(0)
    index = np.ceil(steps / size).astype(int)  # step s falls in bin ceil(s / size)
    borders, means = [], []
    for k in np.unique(index):
        borders.append(k * size)
        means.append(values[index == k].mean())
    return np.array(borders, float), np.array(means, float)


def paper_curves(task):
    """The paper's DreamerV2 seeds for `task`: a list of (xs, ys)."""
    directory = scores_dir()
    if directory is None:
        return []
    curves = []
    for path in sorted(directory.glob('*-dreamerv2.json')):
        for record in json.loads(path.read_text()):
            if record['task'] == task and record['method'] == 'dreamerv2':
                curves.append((np.array(record['xs'], float), np.array(record['ys'], float)))
    return curves


def paper_values(curves, x, exact=False):
    """The paper's seeds' values at frames `x`: each seed's bin whose right border is the first at
    or after x (with `exact`, only seeds with a border at x itself); seeds that end before x are
    left out."""
    values = []
    for xs, ys in curves:
        index = np.searchsorted(xs, x)
        if index < len(xs) and (not exact or xs[index] == x):
            values.append(float(ys[index]))
    return values


def paper_at(curves, x):
    """Mean and std over the paper's seeds of their values at frames `x` (see `paper_values`);
    None when no seed reaches x."""
    values = paper_values(curves, x)
    if not values:
        return None
    return float(np.mean(values)), float(np.std(values))


def baselines(task):
    directory = scores_dir()
    if directory is None:
        return {}
    table = json.loads((directory / 'baselines.json').read_text())
    return {k: v for k, v in table.get(task, {}).items() if k in ('random', 'human_gamer')}


def plot(runs, out, metric, paper=True):
    import matplotlib
    matplotlib.use('Agg')  # files only, no display needed
    import matplotlib.pyplot as plt

    tasks = sorted({run['task'] for run in runs})
    cols = min(3, len(tasks))
    rows = -(-len(tasks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.4 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        for run in (r for r in runs if r['task'] == task):
            ax.plot(run['xs'], run['ys'], marker='o', ms=3, label=run['seed'])
        curves = paper_curves(task) if paper else []
        if curves:
            grid = np.unique(np.concatenate([xs for xs, _ in curves]))
            stats = np.array([paper_at(curves, x) for x in grid], float)
            ax.plot(grid, stats[:, 0], color='black', lw=1, label='paper DreamerV2')
            ax.fill_between(grid, stats[:, 0] - stats[:, 1], stats[:, 0] + stats[:, 1],
                            color='black', alpha=0.15, lw=0)
        for name, score in baselines(task).items():
            ax.axhline(score, ls='--', lw=1, color='gray')
            ax.annotate(name, (0, score), fontsize=7, color='gray')
        ax.set_title(task.split('_', 1)[-1].replace('_', ' ').title())
        ax.set_xlabel('environment frames')
        ax.set_ylabel(metric)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis('off')
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / 'curves.png', dpi=80)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog='python -m dreamerv2_tf.plot', description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split('\n\n', 1)[1])
    parser.add_argument('logdirs', nargs='+', help='training logdirs')
    parser.add_argument('--out', default='plots', help='output folder (default plots)')
    parser.add_argument('--metric', default='eval_return', help='y axis (default eval_return)')
    parser.add_argument('--bins', type=float, help='bin size in frames (default: per suite)')
    parser.add_argument('--no-paper', action='store_true', help="leave out the paper's curves")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    runs = []
    for logdir in args.logdirs:
        path = pathlib.Path(logdir)
        if not (path / 'metrics.jsonl').exists() or not (path / 'config.yaml').exists():
            print(f'error: {path} has no metrics.jsonl and config.yaml', file=sys.stderr)
            return 2
        task, steps, values = load_run(path, args.metric)
        size = args.bins or BINS.get(task.split('_')[0], 1e5)
        xs, ys = binned(steps, values, size)
        if not len(xs):
            print(f'{path}: no {args.metric} values yet; left out.')
            continue
        runs.append({'task': task, 'method': 'dreamerv2_tf', 'seed': str(path),
                     'xs': xs.tolist(), 'ys': ys.tolist()})
    if not runs:
        print(f'error: no run has {args.metric} values', file=sys.stderr)
        return 2
    out = pathlib.Path(args.out)
    plot(runs, out, args.metric, paper=not args.no_paper)
    (out / 'runs.json').write_text(json.dumps(runs))
    print(f'{"run":40s} {"frames":>12s} {args.metric:>12s} {"paper (mean +- std)":>22s}')
    for run in runs:
        x, y = run['xs'][-1], run['ys'][-1]
        reference = paper_at(paper_curves(run['task']), x) if not args.no_paper else None
        shown = f'{reference[0]:.1f} +- {reference[1]:.1f}' if reference else '-'
        print(f'{run["seed"][-40:]:40s} {x:12.0f} {y:12.2f} {shown:>22s}')
    print(f'Wrote {out / "curves.png"} and {out / "runs.json"}.')
    return 0


if __name__ == '__main__':
    sys.exit(main())
