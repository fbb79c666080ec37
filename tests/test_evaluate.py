"""`python -m dreamerv2_tf.evaluate` on the checkpoint logdir of a tiny training run: exit code,
printed returns and their summary, and bad logdirs."""

import re
import subprocess
import sys

import pytest

from conftest import command_env, run_module

CARTPOLE_TINY = ['--configs', 'defaults', 'cartpole', 'tiny']
EPISODE = re.compile(r'^Episode (\d+)/(\d+): return (-?[\d.]+), (\d+) steps, [\d.]+ s$', re.M)
SUMMARY = re.compile(r'^Return over (\d+) episodes: mean (-?[\d.]+), std ([\d.]+), '
                     r'min (-?[\d.]+), max (-?[\d.]+)$', re.M)


@pytest.fixture(scope='module')
def trained_logdir(tmp_path_factory):
    """A tiny CartPole run (300 agent steps) that leaves a checkpoint behind."""
    logdir = tmp_path_factory.mktemp('evaluate') / 'run'
    code, output, _ = run_module('dreamerv2_tf.train', [
        *CARTPOLE_TINY, '--logdir', str(logdir), '--steps', '300', '--prefill', '150',
        '--eval_every', '300'], timeout=240)
    assert code == 0, output[-3000:]
    assert list((logdir / 'checkpoints').glob('*.index')), 'no checkpoint written'
    return logdir


def test_evaluate_prints_each_return_and_their_mean(trained_logdir):
    code, output, _ = run_module('dreamerv2_tf.evaluate', [
        '--logdir', str(trained_logdir), '--episodes', '2'], timeout=240)
    assert code == 0, output[-3000:]
    assert re.search(r'^Evaluating .* \(step 300\) on gym_CartPole-v1, 2 episodes, eval actions\.$',
                     output, re.M), output[-2000:]
    episodes = EPISODE.findall(output)
    assert [(int(i), int(n)) for i, n, _, _ in episodes] == [(1, 2), (2, 2)], output[-2000:]
    returns = [float(r) for _, _, r, _ in episodes]
    lengths = [int(length) for _, _, _, length in episodes]
    # CartPole pays +1 per step, so each return is the episode's length (at most 500 steps).
    assert returns == [float(length) for length in lengths]
    assert all(1 <= length <= 500 for length in lengths)
    summary = SUMMARY.findall(output)
    assert len(summary) == 1, output[-2000:]
    count, mean, std, low, high = summary[0]
    assert int(count) == 2
    mean_returns = sum(returns) / len(returns)
    # Printed returns carry one decimal and the summary two: equal up to that rounding.
    assert float(mean) == pytest.approx(mean_returns, abs=0.051)
    assert float(std) == pytest.approx(abs(returns[0] - returns[1]) / 2, abs=0.051)
    assert float(low) == pytest.approx(min(returns), abs=0.051)
    assert float(high) == pytest.approx(max(returns), abs=0.051)


def error_lines(stderr):
    """stderr without TensorFlow's start-up chatter."""
    return [line for line in stderr.splitlines() if line.strip()
            and not line.startswith(('WARNING: All log', 'I0000', 'E0000', 'W0000'))]


@pytest.mark.parametrize('kind', ['missing', 'empty'])
def test_bad_logdir_exits_2_with_one_line(tmp_path, kind):
    logdir = tmp_path / 'nothing-here'
    if kind == 'empty':
        logdir.mkdir()
    result = subprocess.run(
        [sys.executable, '-m', 'dreamerv2_tf.evaluate', '--logdir', str(logdir), '--episodes',
         '2'], capture_output=True, text=True, timeout=120, env=command_env())
    assert result.returncode == 2, result.stdout[-1000:] + result.stderr[-2000:]
    lines = error_lines(result.stderr)
    assert len(lines) == 1, lines
    assert lines[0].startswith('error: ') and str(logdir) in lines[0]
    assert 'Traceback' not in result.stderr
    assert 'Episode' not in result.stdout
