"""Memory benchmark: resident memory (RSS) of a long training run, sampled over time.

    python -m dreamerv2_tf.bench memory [--minutes 30] [--interval 10] [--capacity 5000]
        [--configs defaults atari tiny] [--task atari_pong] [--root runs/memory/NAME]
        [--out benchmarks/memory/NAME] [config flags ...]

Runs `python -m dreamerv2_tf.train` on a fresh logdir with a small replay (`--capacity`
transitions, so that it fills within minutes), samples the RSS of the training process and its
children every `--interval` seconds, and stops it (SIGTERM) after `--minutes`. Once the replay is
full (its total steps passed its capacity, so eviction runs), memory should stay flat: the report
gives the median RSS over the first minute after the fill, over the last minute, and their
ratio. The samples go to `<out>/samples.csv` as they are taken and the summary to
`<out>/summary.json` and `<out>/README.md`. A rerun starts a new run (what it measures is one
process's lifetime), so it is not resumed; `--minutes 3` gives a cheap check.
"""

import argparse
import json
import os
import pathlib
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time


def parse(argv):
    parser = argparse.ArgumentParser(prog='python -m dreamerv2_tf.bench memory',
                                     description=__doc__.split('\n\n')[0])
    parser.add_argument('--minutes', type=float, default=30.0, help='how long to run')
    parser.add_argument('--interval', type=float, default=10.0, help='seconds between samples')
    parser.add_argument('--capacity', type=float, default=5000,
                        help='replay capacity in transitions (small, so that it fills early)')
    parser.add_argument('--configs', nargs='+', default=['defaults', 'atari', 'tiny'])
    parser.add_argument('--task', default='atari_pong')
    parser.add_argument('--root', help='logdir of the run (default runs/memory/<task>)')
    parser.add_argument('--out', help='report folder (default benchmarks/memory/<task>)')
    args, flags = parser.parse_known_args(argv)
    if args.minutes <= 0 or args.interval <= 0 or args.capacity < 1:
        parser.error('--minutes, --interval and --capacity must be positive')
    return args, flags


def process_tree(pid):
    """`pid` and all its descendants that are still alive."""
    pids, queue = [], [pid]
    while queue:
        current = queue.pop()
        pids.append(current)
        try:
            for task in os.listdir(f'/proc/{current}/task'):
                with open(f'/proc/{current}/task/{task}/children') as f:
                    queue.extend(int(child) for child in f.read().split())
        except OSError:
            continue
    return pids


def rss_bytes(pid):
    """Resident set size of `pid` (0 if it is gone), from /proc/<pid>/status."""
    try:
        with open(f'/proc/{pid}/status') as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def last_metrics(path):
    """The latest step and replay totals logged in metrics.jsonl (empty dict before any)."""
    found = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line being written
        found['step'] = record.get('step', found.get('step'))
        for key in ('train_total_steps', 'train_loaded_steps', 'train_loaded_bytes'):
            if key in record:
                found[key] = record[key]
    return found


def summarize(samples, capacity):
    """Growth of RSS after the replay filled: medians of the first and last minute after it."""
    full = [s for s in samples if s['total_steps'] is not None and s['total_steps'] > capacity]
    if len(full) < 4:
        return {'replay_full': bool(full), 'samples_after_fill': len(full)}
    start = full[0]['seconds']
    end = full[-1]['seconds']
    window = min(60.0, (end - start) / 3)
    first = [s['rss_mib'] for s in full if s['seconds'] <= start + window]
    last = [s['rss_mib'] for s in full if s['seconds'] >= end - window]
    baseline, final = statistics.median(first), statistics.median(last)
    return {
        'replay_full': True, 'samples_after_fill': len(full),
        'filled_at_seconds': round(start, 1), 'filled_at_step': full[0]['step'],
        'end_seconds': round(end, 1), 'end_step': full[-1]['step'],
        'rss_after_fill_mib': round(baseline, 1), 'rss_end_mib': round(final, 1),
        'rss_max_after_fill_mib': round(max(s['rss_mib'] for s in full), 1),
        'growth_percent': round(100 * (final - baseline) / baseline, 2),
        'window_seconds': round(window, 1),
    }


def main(argv):
    args, flags = parse(argv)
    root = pathlib.Path(args.root or f'runs/memory/{args.task}')
    out = pathlib.Path(args.out or f'benchmarks/memory/{args.task}')
    if root.exists():
        shutil.rmtree(root)  # one process's lifetime is measured: always a fresh run
    root.mkdir(parents=True)
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, '-m', 'dreamerv2_tf.train', '--configs', *args.configs,
               '--task', args.task, '--logdir', str(root), '--steps', '1e9',
               '--replay.capacity', str(args.capacity), *flags]
    print(f'Memory benchmark: {shlex.join(command)}\nfor {args.minutes:g} minutes, a sample every '
          f'{args.interval:g} s; samples in {out}/samples.csv.', flush=True)
    log = open(root / 'train.log', 'w')
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                               env=dict(os.environ, PYTHONUNBUFFERED='1'))
    samples, start = [], time.monotonic()
    csv = open(out / 'samples.csv', 'w')
    csv.write('seconds,rss_mib,step,total_steps,loaded_steps\n')
    try:
        while time.monotonic() - start < 60 * args.minutes and process.poll() is None:
            time.sleep(args.interval)
            rss = sum(rss_bytes(pid) for pid in process_tree(process.pid)) / 2**20
            logged = last_metrics(root / 'metrics.jsonl')
            sample = {'seconds': time.monotonic() - start, 'rss_mib': rss,
                      'step': logged.get('step'), 'total_steps': logged.get('train_total_steps'),
                      'loaded_steps': logged.get('train_loaded_steps')}
            samples.append(sample)
            csv.write(f"{sample['seconds']:.1f},{rss:.1f},{sample['step']},"
                      f"{sample['total_steps']},{sample['loaded_steps']}\n")
            csv.flush()
            print(f"  {sample['seconds'] / 60:5.1f} min  RSS {rss:7.1f} MiB  step "
                  f"{sample['step']}  replay {sample['loaded_steps']}/{int(args.capacity)} loaded, "
                  f"{sample['total_steps']} total", flush=True)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(300)
            except subprocess.TimeoutExpired:
                process.kill()
        log.close()
        csv.close()
    if process.returncode not in (0, 128 + signal.SIGTERM, -signal.SIGTERM):
        print(f'error: the training run exited with {process.returncode}; see {root}/train.log',
              file=sys.stderr)
        return 1
    summary = {'command': shlex.join(command), 'minutes': args.minutes,
               'capacity': args.capacity, **summarize(samples, args.capacity)}
    (out / 'summary.json').write_text(json.dumps(summary, indent=1))
    lines = ['# Memory benchmark', '', f"Command: `{summary['command']}`", '']
    lines += [f'- {key}: {value}' for key, value in summary.items() if key != 'command']
    (out / 'README.md').write_text('\n'.join(lines) + '\n')
    print('\n'.join(lines[4:]))
    if not summary.get('replay_full'):
        print('warning: the replay did not fill; use a smaller --capacity or more --minutes',
              file=sys.stderr)
    return 0
