"""`python -m dreamerv2_tf.evaluate` on the checkpoint logdir of a tiny training run: exit code,
printed returns and their summary, and bad logdirs. Training and the command run in-process
(`train()` and `evaluate.main`); tests/test_export.py runs the command as a process."""

import re

import pytest

from conftest import make_config

EPISODE = re.compile(r'^Episode (\d+)/(\d+): return (-?[\d.]+), (\d+) steps, [\d.]+ s$', re.M)
SUMMARY = re.compile(r'^Return over (\d+) episodes: mean (-?[\d.]+), std ([\d.]+), '
                     r'min (-?[\d.]+), max (-?[\d.]+)$', re.M)


@pytest.fixture(scope='module')
def trained_logdir(tmp_path_factory):
    """A tiny CartPole run (300 agent steps) that leaves a checkpoint behind."""
    from dreamerv2_tf.train import train
    logdir = tmp_path_factory.mktemp('evaluate') / 'run'
    config = make_config('defaults', 'cartpole', flags=[
        '--logdir', str(logdir), '--steps', '300', '--prefill', '150', '--eval_every', '300'])
    assert not config.deterministic  # op determinism would stay on for the whole worker
    summary = train(config=config)
    assert summary['step'] == 300, summary
    assert list((logdir / 'checkpoints').glob('*.index')), 'no checkpoint written'
    return logdir


def evaluate(args, capsys):
    """Runs `python -m dreamerv2_tf.evaluate args` in-process: (exit code, stdout, stderr)."""
    from dreamerv2_tf.evaluate import main
    capsys.readouterr()  # drop anything printed before
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_evaluate_prints_each_return_and_their_mean(trained_logdir, capsys):
    code, out, err = evaluate(['--logdir', str(trained_logdir), '--episodes', '2'], capsys)
    output = out + err
    assert code == 0, output[-3000:]
    assert re.search(r'^Evaluating .* \(step 300\) on gym_CartPole-v1, 2 episodes, eval actions\.$',
                     out, re.M), output[-2000:]
    episodes = EPISODE.findall(out)
    assert [(int(i), int(n)) for i, n, _, _ in episodes] == [(1, 2), (2, 2)], output[-2000:]
    returns = [float(r) for _, _, r, _ in episodes]
    lengths = [int(length) for _, _, _, length in episodes]
    # CartPole pays +1 per step, so each return is the episode's length (at most 500 steps).
    assert returns == [float(length) for length in lengths]
    assert all(1 <= length <= 500 for length in lengths)
    summary = SUMMARY.findall(out)
    assert len(summary) == 1, output[-2000:]
    count, mean, std, low, high = summary[0]
    assert int(count) == 2
    mean_returns = sum(returns) / len(returns)
    # Printed returns carry one decimal and the summary two: equal up to that rounding.
    assert float(mean) == pytest.approx(mean_returns, abs=0.051)
    assert float(std) == pytest.approx(abs(returns[0] - returns[1]) / 2, abs=0.051)
    assert float(low) == pytest.approx(min(returns), abs=0.051)
    assert float(high) == pytest.approx(max(returns), abs=0.051)


@pytest.mark.parametrize('kind', ['missing', 'empty'])
def test_bad_logdir_exits_2_with_one_line(tmp_path, kind, capsys):
    logdir = tmp_path / 'nothing-here'
    if kind == 'empty':
        logdir.mkdir()
    # `python -m` exits with main's return value; an exception would escape here as a traceback.
    code, out, err = evaluate(['--logdir', str(logdir), '--episodes', '2'], capsys)
    assert code == 2, out[-1000:] + err[-2000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith('error: ') and str(logdir) in lines[0]
    assert 'Traceback' not in err
    assert 'Episode' not in out
