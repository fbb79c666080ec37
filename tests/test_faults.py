"""Faults: a deterministic run killed by SIGKILL in the middle of an episode write and resumed
continues with the losses of the uninterrupted run; episodes written after the checkpoint are set
aside, none lost or stored twice; a full disk gives one line and no partial file; the fault
benchmark's replay-corruption and fuzzing parts on small samples."""

import errno
import hashlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from dreamerv2_tf.run.replay import load_episode

from conftest import command_env

# A deterministic corridor (fixed start, every episode cut after exactly 10 steps) trained
# through the package API. With phases of 30 steps every checkpoint falls between two episodes,
# so that a resumed run, whose environment starts with a reset, sees what the uninterrupted run
# sees (no periodic saves: they could fall inside an episode on a slow machine). Prefill to step
# 20, checkpoints at steps 50 and 80, an update and a log line every 3 steps. argv: logdir, then
# 'kill' to SIGKILL the process inside the third episode write after the checkpoint of step 50
# (after its bytes are synced, before the rename).
CHILD = textwrap.dedent('''
    import os, signal, sys
    import gymnasium
    import numpy as np
    from dreamerv2_tf import config as configlib, train
    from dreamerv2_tf.run import loop

    class Corridor(gymnasium.Env):
        observation_space = gymnasium.spaces.Box(0, 255, (16, 16, 3), np.uint8)
        action_space = gymnasium.spaces.Discrete(3)

        def reset(self, seed=None, options=None):
            super().reset(seed=seed)
            self.position = 0
            return self._obs(), {}

        def step(self, action):
            self.position = max(0, self.position + {0: 0, 1: 1, 2: -1}[int(action)])
            return self._obs(), float(self.position), False, False, {}

        def _obs(self):
            image = np.zeros((16, 16, 3), np.uint8)
            image[:, self.position] = 255
            return image

    logdir, kill = sys.argv[1], sys.argv[2:] == ['kill']
    config = configlib.parse_flags(configlib.compose(['defaults', 'tiny']), [
        '--logdir', logdir, '--steps', '80', '--prefill', '20', '--eval_every', '30',
        '--log_every', '3', '--time_limit', '10', '--train_every', '3', '--deterministic', 'True',
        '--save_every', '0',
        '--replay.minlen', '8', '--replay.maxlen', '8', '--dataset.length', '8',
        '--encoder.mlp_keys', '$^', '--decoder.mlp_keys', '$^', '--seed', '3'])
    if kill:
        real_save, real_fsync, writes = loop.Trainer.save, os.fsync, []

        def save(self, reason):
            real_save(self, reason)
            if self.step == 50:
                writes.append(0)  # armed

        def fsync(fd):
            real_fsync(fd)
            if writes and os.readlink(f'/proc/self/fd/{fd}').endswith('.tmp'):
                writes[0] += 1
                if writes[0] == 3:
                    print('KILLED IN EPISODE WRITE', flush=True)
                    os.kill(os.getpid(), signal.SIGKILL)

        loop.Trainer.save, os.fsync = save, fsync
    train.train(Corridor, config)
''')


def losses(text):
    """The `*_loss` values of metrics.jsonl text, per logged step."""
    rows = {}
    for line in text.splitlines():
        row = json.loads(line)
        values = {k: v for k, v in row.items() if k.endswith('_loss')}
        if values:
            rows.setdefault(row['step'], {}).update(values)
    return rows


def digests(folder):
    return {path.name: hashlib.sha256(b''.join(
        value.tobytes() for _, value in sorted(load_episode(path).items()))).hexdigest()
        for path in pathlib.Path(folder).glob('*.npz')}


def start(script, *args):
    return subprocess.Popen([sys.executable, str(script), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=command_env())


def test_deterministic_run_killed_in_an_episode_write_resumes_with_the_same_losses(tmp_path):
    script = tmp_path / 'child.py'
    script.write_text(CHILD)
    whole, broken = tmp_path / 'whole', tmp_path / 'broken'
    runs = [start(script, whole), start(script, broken, 'kill')]
    outputs = [run.communicate(timeout=900)[0] for run in runs]  # a hang guard
    assert runs[0].returncode == 0, outputs[0][-3000:]
    assert runs[1].returncode == -signal.SIGKILL, outputs[1][-3000:]
    assert 'KILLED IN EPISODE WRITE' in outputs[1]

    # What the kill left: a temporary file, and episodes written after the checkpoint.
    temps = list((broken / 'train_episodes').glob('.*.tmp'))
    assert len(temps) == 1
    before = {folder: digests(broken / folder) for folder in ('train_episodes', 'eval_episodes')}
    metrics_before = (broken / 'metrics.jsonl').read_text()

    resumed = start(script, broken)
    output = resumed.communicate(timeout=900)[0]
    assert resumed.returncode == 0, output[-3000:]
    assert 'Resumed from' in output and 'at step 50' in output
    assert 'Training finished at step 80.' in output
    # The two episodes written after the checkpoint (the evaluation at step 50 and the train
    # episode of steps 50-60) moved to the side folder, byte for byte; the temp file is gone.
    aside = {folder: digests(broken / 'after_checkpoint' / folder)
             for folder in ('train_episodes', 'eval_episodes')}
    assert [len(aside[f]) for f in ('train_episodes', 'eval_episodes')] == [1, 1]
    assert not list((broken / 'train_episodes').glob('.*.tmp'))
    after = {folder: digests(broken / folder) for folder in ('train_episodes', 'eval_episodes')}
    for folder in before:
        for name, digest in before[folder].items():  # nothing lost, nothing changed
            assert after[folder].get(name, aside[folder].get(name)) == digest, name
        assert len(set(after[folder].values())) == len(after[folder])  # no episode twice
        # The resumed run collected the set-aside episodes again, identically.
        assert set(aside[folder].values()) <= set(after[folder].values())
    # The same episodes as the uninterrupted run, in both folders.
    for folder in before:
        assert sorted(after[folder].values()) == sorted(digests(whole / folder).values())

    # Same seed in two processes: the losses logged before the kill equal the uninterrupted
    # run's, step for step (the determinism that `--deterministic True` promises).
    reference = losses((whole / 'metrics.jsonl').read_text())
    early = losses(metrics_before)
    assert len(early) >= 5 and all(early[step] == reference[step] for step in early)
    assert len({v for row in early.values() for v in row.values()}) > 10  # changing losses

    # Losses after the resume equal those of the uninterrupted run, step for step.
    text = (broken / 'metrics.jsonl').read_text()
    assert text.startswith(metrics_before)
    continued = losses(text[len(metrics_before):])
    steps = sorted(continued)
    assert steps == [step for step in sorted(reference) if step > 50] and len(steps) >= 8
    for step in steps:
        assert continued[step] == reference[step], step
    values = [v for step in steps for v in continued[step].values()]
    assert len(set(values)) > 10  # real, changing losses


# Full disk --------------------------------------------------------------------------------------

def test_full_disk_while_writing_an_episode_leaves_no_file(tmp_path, monkeypatch):
    from dreamerv2_tf.run import replay as replaylib
    episode = {'x': np.arange(11.0), 'is_last': np.arange(11) == 10}
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(replaylib.os, 'fsync', full)
    with pytest.raises(OSError) as error:
        replaylib.Replay(tmp_path, minlen=1).add_episode(episode)
    monkeypatch.setattr(replaylib.os, 'fsync', real_fsync)
    assert error.value.errno == errno.ENOSPC and str(tmp_path) in error.value.filename
    assert list(tmp_path.iterdir()) == []  # no temporary or partial episode


def test_full_disk_in_the_middle_of_a_metrics_line_cuts_it_off(tmp_path, monkeypatch):
    from dreamerv2_tf.run import logger as loglib
    output = loglib.JSONLOutput(tmp_path)
    output.write(1, [('a', 1.0)])
    whole = (tmp_path / 'metrics.jsonl').read_bytes()
    real_write, calls = os.write, []

    def write(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[:5]))  # the disk takes part of the line
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(loglib.os, 'write', write)
    with pytest.raises(OSError):
        output.write(2, [('a', 2.0)])
    monkeypatch.setattr(loglib.os, 'write', real_write)
    assert len(calls) == 2
    assert (tmp_path / 'metrics.jsonl').read_bytes() == whole


def test_full_disk_gives_one_line_and_exit_1(monkeypatch, capsys, tmp_path):
    from dreamerv2_tf import train
    from dreamerv2_tf.run.checkpoint import DiskFullError

    def stub(**kwargs):
        try:
            raise OSError(errno.ENOSPC, 'No space left on device', str(tmp_path / 'x.npz'))
        except OSError as e:
            raise RuntimeError('while training') from e

    monkeypatch.setattr(train, 'train', stub)
    assert train.main(['--configs', 'defaults', 'atari', 'tiny']) == 1
    out, err = capsys.readouterr()
    assert out == '' and len(err.splitlines()) == 1
    assert err.startswith(f'error: no space left on the device while writing {tmp_path}/x.npz')
    monkeypatch.setattr(train, 'train', lambda **kw: (_ for _ in ()).throw(
        DiskFullError('a checkpoint to ckpt', OSError('disk'))))
    assert train.main(['--configs', 'defaults', 'atari', 'tiny']) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: no space left on the device while writing a checkpoint to ')
    assert len(err.splitlines()) == 1


# The benchmark's in-process parts on small samples ---------------------------------------------

def test_bad_files_in_a_replay_folder_are_skipped_with_a_warning(tmp_path):
    import argparse
    from dreamerv2_tf.benchmarks import faults
    result = faults.part_replay(argparse.Namespace(seed=1), tmp_path, lambda line: None)
    assert result['not warned'] == [] and result['warned about'] == result['bad files'] == 7
    assert result['good episodes loaded'] == 4 and result['ok']


def test_fuzzed_command_lines_and_config_files_give_one_error_line(tmp_path):
    import argparse
    from dreamerv2_tf.benchmarks import faults
    result = faults.part_fuzz(argparse.Namespace(seed=7, fuzz=25),
                              tmp_path, lambda line: None)
    assert result['tracebacks'] == 0 and result['other'] == 0, result['examples']
    assert result["inputs"] == 25
    assert result["exit 2 with one error line"] >= 20  # malformed inputs, not valid ones
