"""`python -m dreamerv2_tf.bench` with tiny budgets: train and policy print positive medians;
learn writes its report, bins eval returns like the paper, resumes seed by seed and refuses
other settings on the same root."""

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
import tensorflow as tf

from dreamerv2_tf.benchmarks.memory import process_tree

from envs_helpers import process_alive


ATARI_TINY = ['--configs', 'defaults', 'atari', 'tiny']
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def bench(args, capsys):
    """Runs `python -m dreamerv2_tf.bench args` in-process: (exit code, stdout + stderr)."""
    from dreamerv2_tf.bench import main
    capsys.readouterr()  # drop anything printed before
    code = main(args)
    out, err = capsys.readouterr()
    return code, out + err


def test_bench_train_prints_a_positive_median(capsys):
    code, output = bench(['train', *ATARI_TINY, '--steps', '1', '--warmup', '1'], capsys)
    assert code == 0, output[-3000:]
    steps = re.findall(r'^  step (\d+)/2 \((warm-up|timed)\): ([\d.]+) s$', output, re.M)
    assert [(s, kind) for s, kind, _ in steps] == [('1', 'warm-up'), ('2', 'timed')], output[-2000:]
    match = re.search(r'^train step, batch 3 x 16, .*: median ([\d.]+) s over 1 steps '
                      r'\(min ([\d.]+), max ([\d.]+)\)$', output, re.M)
    assert match, output[-2000:]
    median, low, high = map(float, match.groups())
    assert median > 0
    # One timed step: its median, min and max are that step's time.
    assert median == low == high == float(steps[1][2])


def test_bench_policy_prints_a_positive_median(capsys):
    code, output = bench(['policy', *ATARI_TINY, '--batch', '1', '--calls', '3', '--warmup', '1'],
                         capsys)
    assert code == 0, output[-3000:]
    medians = re.findall(r'^agent\.policy \(eval\), batch (\d+): median ([\d.]+) ms over (\d+) '
                         r'calls$', output, re.M)
    assert len(medians) == 1, output[-2000:]
    batch, median, calls = medians[0]
    assert (batch, calls) == ('1', '3') and float(median) > 0
    assert 'SavedModel' not in output  # no --saved-model given


def test_bench_policy_times_a_fresh_savedmodel_export(capsys):
    # Without --saved-model the command exports the agent itself; the SavedModel-only export
    # keeps the core's policy.json inside the SavedModel, where the bench must find it.
    code, output = bench(['policy', *ATARI_TINY, '--batch', '1', '--calls', '2', '--warmup', '0',
                          '--format', 'savedmodel'], capsys)
    assert code == 0, output[-3000:]
    for runtime in (r'SavedModel serving_default', r'savedmodel core \(SavedModelCoreRunner\)'):
        match = re.search(rf'^{runtime}, batch 1: median ([\d.]+) ms over 2 calls$', output, re.M)
        assert match and float(match.group(1)) > 0, output[-2000:]


# bench learn ------------------------------------------------------------------------------------

# The smallest budget that still gives two evaluations (after prefill and at the end) in two
# different bins of the table; the training runs stay processes, as the command makes them.
STEPS = 150


def learn_args(root, out, seeds, steps=STEPS):
    return ['learn', '--configs', 'defaults', 'cartpole', 'tiny', '--steps', str(steps),
            '--seeds', str(seeds), '--root', str(root), '--out', str(out), '--eval_every', '50',
            '--prefill', '100', '--random-episodes', '2']


def bench_learn(args):
    """Runs `python -m dreamerv2_tf.bench args` in-process (it spawns the training runs):
    (exit code, stdout + stderr)."""
    from dreamerv2_tf.bench import main
    output = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv('PYTHONUNBUFFERED', '1')  # as the command's children get it from a shell
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            code = main(list(args))
    return code, output.getvalue()


def eval_points(metrics_path):
    steps, values = [], []
    for line in metrics_path.read_text().splitlines():
        row = json.loads(line)
        if row.get('eval_return') is not None:
            steps.append(float(row['step']))
            values.append(float(row['eval_return']))
    return np.array(steps), np.array(values)


def binned_means(steps, values, borders, size):
    """Mean per bin (border - size, border], None for an empty bin: a plain loop."""
    result = []
    for border in borders:
        inside = [v for s, v in zip(steps, values) if border - size < s <= border]
        result.append(sum(inside) / len(inside) if inside else None)
    return result


def check_table(out, root, seeds):
    results = json.loads((out / 'results.json').read_text())
    config_text = (root / 'seed0' / 'config.yaml').read_text()
    repeat = int(re.search(r'^action_repeat: (\d+)', config_text, re.M).group(1))
    # Gym tasks: bins of a tenth of the run's frames.
    size = STEPS * repeat / 10
    assert results['bin_frames'] == pytest.approx(size)
    borders = [size * k for k in range(1, 11)]
    assert [row['frames'] for row in results['rows']] == [int(b) for b in borders]
    per_seed = []
    for seed in range(seeds):
        steps, values = eval_points(root / f'seed{seed}' / 'metrics.jsonl')
        assert len(steps) >= 2  # after prefill (100 steps) and at the end
        per_seed.append(binned_means(steps, values, borders, size))
    filled = 0
    for index, row in enumerate(results['rows']):
        expected = [per_seed[seed][index] for seed in range(seeds)]
        assert len(row['seeds']) == seeds
        for got, want in zip(row['seeds'], expected):
            if want is None:
                assert got is None
            else:
                assert got == pytest.approx(want, rel=1e-9)
        present = [v for v in expected if v is not None]
        assert row['count'] == len(present)
        if present:
            filled += 1
            assert row['mean'] == pytest.approx(sum(present) / len(present), rel=1e-9)
            assert row['min'] == pytest.approx(min(present))
            assert row['max'] == pytest.approx(max(present))
    assert filled >= 2
    table = (out / 'table.md').read_text()
    header = table.splitlines()[0]
    assert re.findall(r'seed (\d+)', header) == [str(s) for s in range(seeds)]
    # One table line per bin holding an evaluation, with the seed means rounded.
    lines = [line for line in table.splitlines() if re.match(r'\| [\d,]+ \|', line)]
    assert len(lines) == filled
    return results


@pytest.fixture(scope='module')
def learned(tmp_path_factory):
    base = tmp_path_factory.mktemp('learn')
    root, out = base / 'R', base / 'O'
    args = learn_args(root, out, 1)
    code, output = bench_learn(args)
    assert code == 0, output[-3000:]
    return root, out, args, output


def test_learn_writes_the_report_with_the_binned_eval_returns(learned):
    root, out, args, output = learned
    # The default name joins the task and every block after defaults.
    assert 'Learning benchmark gym_CartPole-v1_cartpole_tiny: 1 seeds' in output
    for name in ('table.md', 'results.json', 'curves.png', 'README.md'):
        assert (out / name).is_file(), name
    assert (out / 'curves.png').read_bytes()[:8] == PNG_MAGIC
    readme = (out / 'README.md').read_text()
    # The committed report names no folder of this machine outside the checkout.
    shown = ['<root>' if a == str(root) else '<out>' if a == str(out) else a for a in args]
    assert shlex.join(['python', '-m', 'dreamerv2_tf.bench', *shown]) in readme
    assert json.loads((out / 'results.json').read_text())['command'] in readme
    for name in ('README.md', 'results.json', 'seed0/config.yaml'):
        assert str(root.parent) not in (out / name).read_text(), name
    config = (out / 'seed0' / 'config.yaml').read_text()
    assert 'logdir: <root>/seed0\n' in config
    assert config.replace('logdir: <root>/seed0', f'logdir: {root}/seed0') == \
        (root / 'seed0' / 'config.yaml').read_text()
    for name in ('metrics.jsonl', 'wall.json'):
        copied = out / 'seed0' / name
        assert copied.read_bytes() == (root / 'seed0' / name).read_bytes(), name
    results = check_table(out, root, 1)
    assert results['steps'] == STEPS and results['seeds'][0]['finished'] is True
    # Updates come from the final checkpoint's counter: the metrics log them only every
    # log_every steps, short of the final count.
    latest = tf.train.latest_checkpoint(str(root / 'seed0' / 'checkpoints'))
    updates = int(tf.train.load_variable(latest, 'counters/updates/.ATTRIBUTES/VARIABLE_VALUE'))
    status = json.loads((root / 'seed0' / 'wall.json').read_text())
    wall = status['seconds']
    assert status['updates'] == results['seeds'][0]['updates'] == updates > 0
    assert results['seeds'][0]['seconds_per_update'] == round(wall / updates, 3)
    assert len(results['random_returns']) == 2
    # CartPole pays +1 per step: a random episode returns at least 1 and at most 500.
    assert all(1 <= r <= 500 for r in results['random_returns'])
    assert f"Random policy: mean return {np.mean(results['random_returns']):.1f}." in \
        (out / 'table.md').read_text()
    log = (root / 'seed0' / 'train.log').read_text()
    assert log.count('\n$ ') + log.startswith('$ ') == 1


def test_learn_rerun_skips_finished_seeds_and_runs_new_ones(learned):
    root, out, _, _ = learned
    # A person's notes on the run survive the rerun and end the regenerated README.
    (out / 'notes.md').write_text('How it ran: by hand.\n')
    log_before = (root / 'seed0' / 'train.log').read_bytes()
    metrics_before = (root / 'seed0' / 'metrics.jsonl').read_bytes()
    # More seeds at once than any machine's cores: a warning, and only the unfinished seed runs.
    code, output = bench_learn([*learn_args(root, out, 2), '--parallel', '4096'])
    assert code == 0, output[-3000:]
    assert f'warning: --parallel 4096 on {os.cpu_count()} CPU cores' in output
    assert 'seed 0: finished before' in output
    assert (root / 'seed0' / 'train.log').read_bytes() == log_before
    assert (root / 'seed0' / 'metrics.jsonl').read_bytes() == metrics_before
    log1 = (root / 'seed1' / 'train.log').read_text()
    assert log1.startswith('$ ') and log1.count('\n$ ') == 0
    assert '--seed 1' in log1.splitlines()[0]
    assert f'Training finished at step {STEPS}.' in log1
    assert (out / 'seed1' / 'metrics.jsonl').exists()
    assert 'Random policy:' not in output.split('Learning benchmark')[0]  # random.json reused
    results = check_table(out, root, 2)
    assert [s['seed'] for s in results['seeds']] == [0, 1]
    assert (out / 'notes.md').read_text() == 'How it ran: by hand.\n'
    assert (out / 'README.md').read_text().endswith('|\n\nHow it ran: by hand.\n')


def test_learn_stopped_by_sigterm_stops_its_seeds_after_they_save(tmp_path):
    # Killed alone, the command used to leave its seed runs behind, their output unread.
    root, out = tmp_path / 'R', tmp_path / 'O'
    args = [*learn_args(root, out, 1, steps=100000), '--save_every', '0', '--eval_every',
            '100000']
    process = subprocess.Popen([sys.executable, '-m', 'dreamerv2_tf.bench', *args],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=dict(os.environ, PYTHONUNBUFFERED='1'))
    guard = threading.Timer(900, process.kill)  # a hang guard, not a speed test
    guard.start()
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if re.match(r'seed 0: \[\d+\].*model_loss', line):
                break
        seed_runs = [pid for pid in process_tree(process.pid) if pid != process.pid]
        assert len(seed_runs) == 1, ''.join(lines)[-3000:]
        process.send_signal(signal.SIGTERM)
        lines += process.stdout.readlines()
        code = process.wait()
    finally:
        guard.cancel()
        if process.poll() is None:
            process.kill()
    output = ''.join(lines)
    assert code == 128 + signal.SIGTERM, output[-3000:]
    assert 'Stopping: each running seed saves a checkpoint first' in output
    assert re.search(r'seed 0: Saved checkpoint \S+ \(on SIGTERM, step \d+\)', output), \
        output[-3000:]
    assert not process_alive(seed_runs[0])
    assert tf.train.latest_checkpoint(str(root / 'seed0' / 'checkpoints'))  # SIGTERM's only
    status = json.loads((root / 'seed0' / 'wall.json').read_text())
    assert status['finished'] is False and status['seconds'] > 0
    assert 'on SIGTERM' in (root / 'seed0' / 'train.log').read_text()


def test_learn_report_only_counts_the_updates_without_checkpoints(learned, tmp_path):
    # A committed report keeps each seed's metrics and wall.json but no checkpoint, and the
    # metrics log the update count only every log_every steps, short of the final count.
    from dreamerv2_tf.bench import main
    root, out, _, _ = learned
    before = json.loads((out / 'results.json').read_text())['seeds'][0]
    copy = tmp_path / 'R'
    shutil.copytree(root, copy)
    shutil.rmtree(copy / 'seed0' / 'checkpoints')
    logged = [json.loads(line).get('updates')
              for line in (copy / 'seed0' / 'metrics.jsonl').read_text().splitlines()]
    assert max(u or 0 for u in logged) < before['updates']
    assert main([*learn_args(copy, tmp_path / 'O', 1), '--report-only']) == 0
    after = json.loads((tmp_path / 'O' / 'results.json').read_text())['seeds'][0]
    assert after['updates'] == before['updates'] > 0
    assert after['seconds_per_update'] == before['seconds_per_update']


def test_learn_refuses_other_steps_on_the_same_root(learned, capsys):
    from dreamerv2_tf.bench import main
    root, out, _, _ = learned
    other = STEPS + 100
    capsys.readouterr()
    code = main(learn_args(root, out, 1, steps=other))  # `python -m` exits with this code
    stdout, stderr = capsys.readouterr()
    assert code == 2, stdout[-1000:] + stderr[-2000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith('error: '), lines
    assert 'steps' in lines[0] and str(root) in lines[0]
    assert not (root / 'seed0' / 'train.log').read_text().count(f'--steps {other}')
    assert json.loads((root / 'bench.json').read_text())['steps'] == STEPS


def test_learn_report_shows_folders_inside_the_checkout_relative_and_drops_report_only(
        tmp_path, monkeypatch):
    from dreamerv2_tf.benchmarks import learn
    monkeypatch.chdir(tmp_path)
    argv = ['learn', '--root', str(tmp_path / 'runs' / 'r'), '--out', 'benchmarks/o',
            '--report-only', '--steps', '10']
    assert learn.shown_argv(argv) == ['learn', '--root', 'runs/r', '--out', 'benchmarks/o',
                                      '--steps', '10']
    outside = tmp_path.parent / 'elsewhere'
    assert learn.shown_argv(['learn', '--out', str(outside), '--root', str(outside)]) == \
        ['learn', '--out', '<out>', '--root', '<root>']
    # argparse also takes --flag=value.
    assert learn.shown_argv([f'--root={outside}', f'--out={tmp_path / "o"}', '--name=x']) == \
        ['--root=<root>', '--out=o', '--name=x']
