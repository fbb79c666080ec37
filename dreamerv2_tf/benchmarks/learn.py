"""Learning benchmark: seeded training runs of one task, summarised as a table and a plot.

Each seed is an ordinary training logdir `<root>/seed<i>` (so it resumes like any run); the
runs are separate processes of `python -m dreamerv2_tf.train`, whose output is shown prefixed
with the seed and kept in `<root>/seed<i>/train.log`. A random policy is measured on the same
task by the same command. The report folder `<out>` receives what is worth committing: the
command and machine (`README.md`), the table (`table.md`, `results.json`), the curves beside the
paper's (`curves.png`) and each seed's `metrics.jsonl`, `config.yaml` and `wall.json` (wall time
and updates); a `notes.md` written there by hand ends the README and survives reruns. Rerunning
the same command skips finished seeds and resumes unfinished ones.
"""

import json
import os
import pathlib
import platform
import shlex
import subprocess
import sys
import threading
import time

import numpy as np

from dreamerv2_tf import plot as plotlib
from dreamerv2_tf.config import Config

STATE_FILE = 'bench.json'  # in the root: the command, so that a resume cannot mix settings


def frames_per_step(config):
    return int(config.action_repeat)


def train_command(spec, seed, logdir):
    return [sys.executable, '-m', 'dreamerv2_tf.train', '--configs', *spec['configs'],
            '--task', spec['task'], '--seed', str(seed), '--logdir', str(logdir),
            '--steps', str(spec['steps']), *spec['flags']]


def check_spec(root, spec):
    """Writes the benchmark's settings on the first run; a rerun with other settings stops."""
    path = root / STATE_FILE
    if path.exists():
        saved = json.loads(path.read_text())
        fixed = ('task', 'configs', 'flags', 'steps')
        changed = [k for k in fixed if saved.get(k) != spec[k]]
        if changed:
            raise ValueError(
                f"{root} holds a benchmark with other settings ({', '.join(changed)}: "
                f"{', '.join(repr(saved.get(k)) for k in changed)}); use another --root")
        spec = {**saved, 'seeds': max(saved.get('seeds', 0), spec['seeds'])}
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec, indent=1))
    return spec


# Running ------------------------------------------------------------------------------------------

def seed_status(logdir):
    """The per-seed record: wall seconds summed over invocations, and whether it finished."""
    path = logdir / 'wall.json'
    return json.loads(path.read_text()) if path.exists() else {'seconds': 0.0, 'finished': False}


def run_seed(spec, seed, logdir, echo, env=None, running=None):
    """Trains one seed to the end (resuming if it started before); returns its exit code. The
    child process is in the set `running` while it runs."""
    logdir.mkdir(parents=True, exist_ok=True)
    status = seed_status(logdir)
    if status['finished']:
        echo(f'seed {seed}: finished before ({status["seconds"] / 60:.1f} min); skipped.')
        return 0
    start = time.time()
    command = train_command(spec, seed, logdir)
    with open(logdir / 'train.log', 'a') as log:
        log.write(f'$ {shlex.join(command)}\n')
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, bufsize=1, env=env)
        if running is not None:
            running.add(process)
        try:
            for line in process.stdout:
                log.write(line)
                log.flush()
                if not _noise(line):
                    echo(f'seed {seed}: {line.rstrip()}')
            code = process.wait()
        except BaseException:
            process.terminate()  # the child saves a checkpoint on SIGTERM
            process.wait()
            raise
        finally:
            if running is not None:
                running.discard(process)
            status['seconds'] += time.time() - start
            status['finished'] = status.get('finished', False) or process.returncode == 0
            # Kept beside the wall time for a report rewritten once the checkpoints are gone (a
            # root rebuilt from a committed report): the metrics log updates only now and then.
            updates = _updates(logdir, status.get('updates'))
            if updates is not None:
                status['updates'] = updates
            (logdir / 'wall.json').write_text(json.dumps(status))
    return code


def _noise(line):
    """TensorFlow's start-up chatter, kept in train.log but not echoed."""
    return line.startswith(('WARNING: All log', 'I0000', 'E0000', 'W0000'))


def run_seeds(spec, root, parallel, echo):
    """Runs the seeds, `parallel` at a time; returns the failed seeds. Interrupted (Ctrl-C, or
    SIGTERM once `main` turned it into SystemExit), it asks every running seed to save and
    stop, and returns only when they have: killed at once instead, the seeds would outlive it
    and lose their output, which it reads."""
    seeds = list(range(spec['seeds']))
    failed, ended, lock, running = [], [], threading.Lock(), set()
    started = time.time()

    def worker(queue, finished):
        try:
            while True:
                with lock:
                    if not queue:
                        return
                    seed = queue.pop(0)
                code = run_seed(spec, seed, root / f'seed{seed}', echo, running=running)
                with lock:
                    ended.append(seed)
                    if code != 0:
                        failed.append(seed)
                    elapsed = time.time() - started
                    left = (f'; about {elapsed / len(ended) * len(queue) / 60:.0f} min left'
                            if queue else '')
                    echo(f'seed {seed} ended with exit code {code} ({len(ended)}/'
                         f'{spec["seeds"]} seeds done{left}).')
        finally:
            finished.set()

    queue = list(seeds)
    # Events, not Thread.join: a join interrupted by a signal can leave is_alive() False for a
    # thread that still runs (CPython 3.11), and the stop below must wait for every seed.
    finished = [threading.Event() for _ in range(max(1, min(parallel, len(seeds))))]
    for event in finished:
        threading.Thread(target=worker, args=(queue, event), daemon=True).start()
    try:
        for event in finished:
            while not event.wait(0.5):  # short waits keep Ctrl-C responsive
                pass
    except BaseException:
        with lock:
            queue.clear()  # start no further seed
        echo('Stopping: each running seed saves a checkpoint first (rerun to resume).')
        for process in list(running):
            if process.poll() is None:
                process.terminate()  # the child saves a checkpoint on SIGTERM
        for event in finished:
            event.wait()  # each worker reads its seed's output to the end and records it
        raise
    return failed


def random_baseline(config, episodes, seed=0):
    """Returns of a uniform random policy on the eval env of `config.task`."""
    from dreamerv2_tf import envs
    from dreamerv2_tf.run.driver import Driver, RandomPolicy
    batch = envs.make_batch_env(config.update(seed=seed), 'eval', 1)
    returns = []
    try:
        driver = Driver(batch)
        driver.on_episode(lambda episode, worker: returns.append(
            float(episode['reward'].astype(np.float64).sum())))
        driver(RandomPolicy(batch.act_space, seed=seed), episodes=episodes)
    finally:
        batch.close()
    return returns


# Summarising --------------------------------------------------------------------------------------

def load_evals(logdir, metric='eval_return'):
    """(frames, values) of one seed's evaluations."""
    if not (logdir / 'metrics.jsonl').exists():
        return np.zeros(0), np.zeros(0)
    _, frames, values = plotlib.load_run(logdir, metric)
    return frames, values


def summarise(curves, borders, size):
    """Per-border rows {'frames', 'seeds': [...], 'mean', 'min', 'max'}: each seed's mean eval
    return in the bin (border - size, border], like the paper's score files."""
    rows = []
    for border in borders:
        values = []
        for frames, returns in curves:
            inside = (frames > border - size) & (frames <= border)
            values.append(float(returns[inside].mean()) if inside.any() else None)
        present = [v for v in values if v is not None]
        rows.append({'frames': int(border), 'seeds': values,
                     'mean': float(np.mean(present)) if present else None,
                     'min': float(np.min(present)) if present else None,
                     'max': float(np.max(present)) if present else None,
                     'count': len(present)})
    return rows


def paper_rows(task, borders):
    """The paper's DreamerV2 curve of `task` at the same borders: mean, min and max over its
    seeds; None where it has no curve."""
    curves = plotlib.paper_curves(task)
    if not curves:
        return None
    rows = []
    for border in borders:
        values = plotlib.paper_values(curves, border, exact=True)
        rows.append({'frames': int(border), 'mean': float(np.mean(values)) if values else None,
                     'min': float(np.min(values)) if values else None,
                     'max': float(np.max(values)) if values else None, 'count': len(values)})
    return rows


def _cell(value):
    return '-' if value is None else f'{value:.0f}'


def table_markdown(rows, paper, random_mean):
    header = '| frames | mean | min | max | seeds | ' + ' | '.join(
        f'seed {i}' for i in range(len(rows[0]['seeds']))) + ' |'
    if paper:
        header += ' paper mean | paper min | paper max |'
    lines = [header, '|' + ' --- |' * header.count(' |')]
    for index, row in enumerate(rows):
        if not row['count'] and not (paper and paper[index]['count']):
            continue  # no evaluation fell into this bin
        cells = [f'{row["frames"]:,}', _cell(row['mean']), _cell(row['min']), _cell(row['max']),
                 str(row['count'])] + [_cell(v) for v in row['seeds']]
        if paper:
            p = paper[index]
            cells += [_cell(p['mean']), _cell(p['min']), _cell(p['max'])]
        lines.append('| ' + ' | '.join(cells) + ' |')
    if random_mean is not None:
        lines.append(f'\nRandom policy: mean return {random_mean:.1f}.')
    return '\n'.join(lines)


def draw(path, task, curves, rows, paper_curves, random_mean, title):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for seed, (frames, values) in enumerate(curves):
        if len(frames):
            ax.plot(frames, values, lw=1, alpha=0.6, marker='.', ms=4, label=f'seed {seed}')
    points = [(r['frames'], r['mean']) for r in rows if r['mean'] is not None]
    if points:
        xs, ys = zip(*points)
        ax.plot(xs, ys, color='C3', lw=2.5, label='mean over seeds (binned)')
    if paper_curves:
        grid = np.unique(np.concatenate([xs for xs, _ in paper_curves]))
        grid = grid[grid <= max([1] + [f.max() for f, _ in curves if len(f)]) * 1.5]
        stats = [plotlib.paper_values(paper_curves, x) for x in grid]
        keep = [i for i, s in enumerate(stats) if s]
        grid = grid[keep]
        stats = [stats[i] for i in keep]
        # Markers and bars keep the paper visible when a short run spans only one of its bins.
        ax.plot(grid, [np.mean(s) for s in stats], color='black', lw=1.5, marker='o', ms=3,
                label=f'paper DreamerV2 ({len(paper_curves)} seeds, full size)')
        lows, highs = [np.min(s) for s in stats], [np.max(s) for s in stats]
        ax.fill_between(grid, lows, highs, color='black', alpha=0.12, lw=0, label='paper min-max')
        ax.vlines(grid, lows, highs, color='black', alpha=0.35, lw=1)
    if random_mean is not None:
        ax.axhline(random_mean, color='gray', ls='--', lw=1, label='random policy')
    ax.set_title(title, fontsize=10)
    ax.set_xlabel('environment frames')
    ax.set_ylabel('eval return')
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def machine():
    model = platform.processor() or platform.machine()
    try:
        for line in pathlib.Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                model = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    return f'{model}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}'


def git_commit():
    try:
        here = pathlib.Path(__file__).resolve().parent
        out = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=here, capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'],
                               cwd=here, capture_output=True, text=True, timeout=10).stdout
        return out.stdout.strip() + (' (with uncommitted changes)' if dirty.strip() else '') \
            if out.returncode == 0 else 'unknown'
    except (OSError, subprocess.SubprocessError):
        return 'unknown'


def shown_path(path, placeholder):
    """`path` as a committed report shows it: relative to the working directory when inside it,
    else `placeholder` (a folder outside the checkout names nothing on another machine)."""
    path = pathlib.Path(path).absolute()
    try:
        return str(path.relative_to(pathlib.Path.cwd()))
    except ValueError:
        return placeholder


NOTES_FILE = 'notes.md'  # in the report folder: appended to README.md, never written
FOLDER_FLAGS = {'--root': '<root>', '--out': '<out>'}  # flag -> its placeholder in a report


def shown_argv(argv):
    """The command line that makes the report: `--root` and `--out` as `shown_path` writes them,
    without `--report-only` (the report is the same either way)."""
    shown, flag = [], None
    for arg in argv:
        name, equals, value = arg.partition('=')
        if flag:
            arg = shown_path(arg, FOLDER_FLAGS[flag])
        elif equals and name in FOLDER_FLAGS:
            arg = f'{name}={shown_path(value, FOLDER_FLAGS[name])}'
        flag = arg if arg in FOLDER_FLAGS else None
        if arg != '--report-only':
            shown.append(arg)
    return shown


def report(spec, root, out, config, command, bin_size, random_returns):
    """Writes the report folder from whatever the seeds have logged so far; returns the rows."""
    import shutil
    out.mkdir(parents=True, exist_ok=True)
    repeat = frames_per_step(config)
    total = spec['steps'] * repeat
    borders = np.arange(bin_size, total + bin_size / 2, bin_size)
    curves, seeds = [], []
    for seed in range(spec['seeds']):
        logdir = root / f'seed{seed}'
        curves.append(load_evals(logdir))
        status = seed_status(logdir)
        updates = _updates(logdir, status.get('updates'))
        # Wall time is recorded when an invocation of the seed ends: none yet while it first runs.
        seconds = status['seconds'] or None
        seeds.append({'seed': seed, 'wall_minutes': round(seconds / 60, 1) if seconds else None,
                      'finished': status['finished'], 'updates': updates,
                      'seconds_per_update': round(seconds / updates, 3)
                      if seconds and updates else None})
        copy = out / f'seed{seed}'
        for name in ('metrics.jsonl', 'wall.json'):
            if (logdir / name).exists():
                copy.mkdir(exist_ok=True)
                shutil.copyfile(logdir / name, copy / name)
        if (logdir / 'config.yaml').exists():  # written by Config.save, like this copy
            Config.load(logdir / 'config.yaml').update(
                logdir=shown_path(logdir, f'<root>/seed{seed}')).save(copy / 'config.yaml')
    rows = summarise(curves, borders, bin_size)
    paper = paper_rows(spec['task'], borders)
    random_mean = float(np.mean(random_returns)) if random_returns else None
    table = table_markdown(rows, paper, random_mean)
    title = f"{spec['task']}  ({' '.join(spec['configs'])})"
    draw(out / 'curves.png', spec['task'], curves, rows, plotlib.paper_curves(spec['task']),
         random_mean, title)
    results = {'task': spec['task'], 'configs': spec['configs'], 'flags': spec['flags'],
               'steps': spec['steps'], 'frames': total, 'bin_frames': bin_size,
               'rows': rows, 'paper': paper, 'random_returns': random_returns, 'seeds': seeds,
               'commit': spec.get('commit'), 'machine': spec.get('machine'), 'command': command}
    (out / 'results.json').write_text(json.dumps(results, indent=1))
    (out / 'table.md').write_text(table + '\n')
    wall = '\n'.join(
        f"| {s['seed']} | {s['wall_minutes'] or '-'} | {s['updates'] or '-'} | "
        f"{s['seconds_per_update'] or '-'} | {'yes' if s['finished'] else 'no'} |" for s in seeds)
    # What a person wrote about the run lives in notes.md, which a rerun never overwrites.
    notes = (out / NOTES_FILE).read_text() if (out / NOTES_FILE).exists() else ''
    notes = f'\n{notes.strip()}\n' if notes.strip() else ''
    (out / 'README.md').write_text(
        f"# {spec['task']}: {' '.join(spec['configs'])}\n\n"
        f"Made by (rerun it to resume or reproduce):\n\n```bash\n{command}\n```\n\n"
        + ''.join(f"`{shown}` stands for the `{flag}` folder it ran with, outside the "
                  f"checkout.\n\n" for flag, shown in FOLDER_FLAGS.items() if shown in command) +
        f"- Commit: `{spec.get('commit')}`\n- Machine: {spec.get('machine')}\n"
        f"- Eval return binned over ({bin_size:,.0f}-frame bins, (border - bin, border]), "
        f"like the paper's score files; `seed<i>/metrics.jsonl` holds every logged value.\n\n"
        f"![curves](curves.png)\n\n{table}\n\n"
        f"| seed | wall minutes | updates | wall seconds per update (whole loop) | finished |\n"
        f"| --- | --- | --- | --- | --- |\n{wall}\n" + notes)
    return rows


def _updates(logdir, recorded=None):
    """The seed's update count: its latest checkpoint's counter, else `recorded` (the count
    `wall.json` kept when the seed's last run ended), else the last logged value (the metrics log
    it only every `log_every` steps), else None."""
    import tensorflow as tf
    latest = tf.train.latest_checkpoint(str(logdir / 'checkpoints'))
    if latest is not None:
        try:
            return int(tf.train.load_checkpoint(latest).get_tensor(
                'counters/updates/.ATTRIBUTES/VARIABLE_VALUE'))
        except (KeyError, ValueError, tf.errors.OpError):
            pass  # a checkpoint without the counter (older runs): fall back to the records
    if recorded is None:
        recorded = _last(logdir, 'updates')
    return None if recorded is None else int(recorded)


def _last(logdir, key):
    """The last logged value of `key` in a seed's metrics, or None."""
    path = logdir / 'metrics.jsonl'
    if not path.exists():
        return None
    last = None
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if row.get(key) is not None:
            last = row[key]
    return last
