"""`python -m dreamerv2_tf.bench loop` on the tiny CartPole config: the breakdown adds up to the
measured wall time, the counts follow from the schedule (updates every `train_every` steps, one
env step and one policy call per measured agent step, evaluations and checkpoints every
`eval_every` steps), and the printed figures agree with each other."""

import re

import pytest

TRAIN_EVERY, REPEAT, WARMUP, STEPS, EVAL_EVERY = 5, 2, 5, 100, 50
ROW = re.compile(r'^(\S.*?)\s+(-?\d+\.\d{3})\s+(-?\d+\.\d)%\s*(\d*)  ', re.M)


@pytest.fixture(scope='module')
def output():
    import contextlib
    import io
    from dreamerv2_tf.bench import main
    text = io.StringIO()
    with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
        code = main(['loop', '--configs', 'defaults', 'cartpole', 'tiny', '--steps', str(STEPS),
                     '--warmup', str(WARMUP), '--bound-updates', '2', '--prefill', '200',
                     '--action_repeat', str(REPEAT), '--train_every', str(TRAIN_EVERY),
                     '--eval_every', str(EVAL_EVERY), '--log_every', '50'])
    assert code == 0, text.getvalue()[-3000:]
    return text.getvalue()


def figure(pattern, text):
    match = re.search(pattern, text, re.M)
    assert match, (pattern, text[-3000:])
    return [float(g.replace(',', '')) for g in match.groups()]


def rows(text):
    table = text.split('where the measured time went')[1]
    found = {m.group(1): (float(m.group(2)), float(m.group(3)), m.group(4))
             for m in ROW.finditer(table)}
    total = figure(r'^total \(measured wall time\)\s+(\d+\.\d{3})', table)[0]
    return found, total


def test_the_breakdown_adds_up_to_the_measured_wall_time(output):
    found, total = rows(output)
    assert list(found) == ['updates', 'policy calls (train and eval)', 'env steps',
                           'replay episode writes', 'dataset/sampling', 'logging/metrics',
                           'checkpoints', 'evaluation', 'other']
    wall = figure(r'^loop: [\d,]+ frames in (\d+\.\d+) s', output)[0]
    assert total == pytest.approx(wall, abs=1e-3)
    # Each row is rounded to 1 ms; exclusive timing never counts a nested call twice, so no
    # row (the remainder `other` included) is negative.
    assert sum(seconds for seconds, _, _ in found.values()) == pytest.approx(wall, abs=0.006)
    assert all(seconds >= -0.0005 for seconds, _, _ in found.values()), found
    assert sum(share for _, share, _ in found.values()) == pytest.approx(100, abs=0.5)


def test_counts_follow_the_schedule(output):
    found, _ = rows(output)
    steps, start, prefilled = figure(r'([\d,]+) agent steps measured from step ([\d,]+) '
                                     r'\(prefill ended at ([\d,]+)\)', output)
    assert steps == STEPS and start == prefilled + WARMUP
    calls = {title: int(c) if c else None for title, (_, _, c) in found.items()}
    # Consecutive steps trigger `train_every` apart: STEPS / TRAIN_EVERY updates in any window.
    assert calls['updates'] == STEPS // TRAIN_EVERY
    assert calls['env steps'] == STEPS
    eval_steps = figure(r'(\d+) eval env steps', output)[0]
    # Phases of EVAL_EVERY steps start at the prefill's end, each ended by a checkpoint and
    # followed by an evaluation; those at prefill + 50 and + 100 fall inside the window (the
    # save that closes it, at prefill + 105, does not).
    assert calls['checkpoints'] == 2 and calls['evaluation'] == 2
    assert eval_steps >= 2  # each evaluation plays at least one step
    # One policy call per agent step that was not a reset, train and eval.
    assert calls['policy calls (train and eval)'] == STEPS + eval_steps
    assert calls['dataset/sampling'] >= calls['updates']  # + eval reports' batches


def test_the_printed_ratio_is_loop_fps_over_the_bound(output):
    frames, wall, fps, updates = figure(
        r'^loop: ([\d,]+) frames in (\d+\.\d+) s = (\d+\.\d+) frames/s \((\d+) updates', output)
    assert frames == STEPS * REPEAT and updates == STEPS // TRAIN_EVERY
    assert fps == pytest.approx(frames / wall, rel=1e-3)
    per_update, repeat, seconds, bound = figure(
        r'^bound: (\d+) agent steps x (\d+) frames per update / (\d+\.\d+) s .* = (\d+\.\d+) '
        r'frames/s$', output)
    assert (per_update, repeat) == (TRAIN_EVERY, REPEAT)
    assert bound == pytest.approx(per_update * repeat / seconds, rel=1e-3)
    ratio = figure(r'^ratio loop / bound: (\d+\.\d+)$', output)[0]
    assert ratio == pytest.approx(fps / bound, rel=1e-3, abs=1e-4)
