"""The training command end to end: artefacts, resume after SIGKILL, SIGTERM, CLI
errors and the package API for custom environments. The loop's own logic (resume, schedules,
stop requests) is tested in-process in test_loop.py."""

import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

import gymnasium
import numpy as np
import pytest
import tensorflow as tf

from dreamerv2_tf.run.replay import load_episode

from conftest import ATARI_RUN_STEPS, ATARI_TINY, command_env, make_config, run_module


def metrics_lines(logdir):
    return [json.loads(line) for line in (logdir / 'metrics.jsonl').read_text().splitlines()]


def event_tags(logdir):
    from tensorboard.backend.event_processing import event_accumulator
    accumulator = event_accumulator.EventAccumulator(
        str(logdir), size_guidance={event_accumulator.IMAGES: 0, event_accumulator.TENSORS: 0})
    accumulator.Reload()
    tags = accumulator.Tags()
    return set(tags['tensors']), set(tags['images'])


def check_run_artefacts(logdir, code, output, seconds, steps=ATARI_RUN_STEPS):
    # `seconds` is not checked: no test asserts on wall-clock time (the machine may be loaded).
    assert code == 0, output[-3000:]
    assert 'Prefill:' in output and 'Eval episode has' in output
    assert f'Training finished at step {steps}.' in output
    lines = metrics_lines(logdir)
    losses = [line for line in lines if 'model_loss' in line]
    assert losses and all(np.isfinite(line['model_loss']) for line in losses)
    assert any('train_return' in line for line in lines)
    assert any('eval_return' in line for line in lines)
    assert any('fps' in line and 'updates_per_sec' in line for line in lines)
    import pandas
    frame = pandas.read_json(logdir / 'metrics.jsonl', lines=True)
    assert len(frame) == len(lines) and 'model_loss' in frame and 'step' in frame
    scalars, images = event_tags(logdir)
    assert {'model_loss', 'kl_loss', 'image_loss', 'actor_loss', 'critic_loss', 'train_return',
            'eval_return', 'fps', 'updates_per_sec'} <= scalars
    assert {'train_openl_image', 'eval_openl_image', 'train_policy_image',
            'eval_policy_image'} <= images
    episodes = sorted((logdir / 'train_episodes').glob('*.npz'))
    assert episodes and all(len(load_episode(path)['reward']) > 1 for path in episodes)
    assert list((logdir / 'eval_episodes').glob('*.npz'))
    assert tf.train.latest_checkpoint(str(logdir / 'checkpoints'))
    assert (logdir / 'config.yaml').exists()


def test_atari_end_to_end(atari_run):
    check_run_artefacts(*atari_run)


DMC_STEPS = 100


def test_dmc_pixels_end_to_end(tmp_path):
    logdir = tmp_path / 'run'
    # The smallest budget that still covers every check. A time limit of 50 agent steps cuts
    # episodes the way DMC's own 1000-frame limit does (not terminal), only sooner: prefill (at
    # least one episode) ends at step 50 with a train episode and its video; an evaluation there
    # (episode, video, open-loop report); one training phase of 50 steps (10 updates) with two
    # metric writes 25 steps apart (fps and updates_per_sec need two) and a second train episode;
    # its checkpoint; and the final evaluation.
    result = run_module('dreamerv2_tf.train', [
        '--configs', 'defaults', 'dmc_vision', 'tiny', '--task', 'dmc_cartpole_swingup',
        '--logdir', str(logdir), '--steps', str(DMC_STEPS), '--prefill', '50',
        '--eval_every', '50', '--log_every', '25', '--time_limit', '50'],
        timeout=1200)  # a hang guard for a loaded machine, not a speed test
    check_run_artefacts(logdir, *result, steps=DMC_STEPS)
    episode = load_episode(sorted((logdir / 'train_episodes').glob('*.npz'))[0])
    assert episode['image'].shape[1:] == (64, 64, 3) and episode['action'].shape[1:] == (1,)


def checkpoint_value(logdir, suffix):
    """A value from the latest checkpoint, by the end of its key."""
    path = tf.train.latest_checkpoint(str(logdir / 'checkpoints'))
    keys = [k for k, _ in tf.train.list_variables(path) if k.endswith(suffix)]
    assert len(keys) == 1, keys
    return tf.train.load_variable(path, keys[0])


def episode_digests(logdir, folder='train_episodes'):
    digests = {}
    for path in (logdir / folder).glob('*.npz'):
        episode = load_episode(path)
        digest = hashlib.sha256(b''.join(episode[k].tobytes() for k in sorted(episode)))
        digests[path.name] = digest.hexdigest()
    return digests


class Reader:
    """Collects a process's output lines in a thread so that the test can wait for one."""

    def __init__(self, process):
        self.lines = []
        self.thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self.thread.start()

    def _read(self, process):
        for line in process.stdout:
            self.lines.append(line)

    def wait_for(self, pattern, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(re.search(pattern, line) for line in self.lines):
                return True
            time.sleep(0.05)
        return False

    @property
    def text(self):
        return ''.join(self.lines)


def start_training(args):
    process = subprocess.Popen([sys.executable, '-m', 'dreamerv2_tf.train', *args],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=command_env())
    return process, Reader(process)


def test_resume_after_sigkill_loses_nothing(tmp_path):
    logdir = tmp_path / 'run'
    args = [*ATARI_TINY, '--logdir', str(logdir), '--steps', '2500', '--eval_every', '1000']
    process, reader = start_training(args)
    try:
        assert reader.wait_for(r'Saved checkpoint', 150), reader.text[-3000:]
        # The first checkpoint ends the first training phase (prefill episode + 1000 steps,
        # about 1850); an eval episode and 650 steps follow, which took 5.5 s on a fast machine.
        delay = random.uniform(0.0, 2.0)
        time.sleep(delay)
        process.kill()  # SIGKILL: no handler runs
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
    before = episode_digests(logdir)  # every episode written before the kill loads
    assert before, reader.text[-2000:]
    step = int(checkpoint_value(logdir, 'state/step/.ATTRIBUTES/VARIABLE_VALUE'))
    iterations = int(checkpoint_value(logdir, 'optimizers/model/_iterations/.ATTRIBUTES/'
                                      'VARIABLE_VALUE'))
    updates = int(checkpoint_value(logdir, 'counters/updates/.ATTRIBUTES/VARIABLE_VALUE'))
    assert step > 0 and iterations > 0

    code, output, _ = run_module('dreamerv2_tf.train', args)
    assert code == 0, output[-3000:]
    assert 'Resumed from' in output and f'at step {step} ({updates} updates)' in output, (
        f'killed {delay:.2f} s after the first checkpoint', output[:3000])
    assert 'Prefill: 0 random steps' not in output  # nothing redone
    after = episode_digests(logdir)
    # Episodes written after the checkpoint are moved aside on resume (README: "Crashes, full
    # disks and resuming"), so the replay matches the checkpoint; nothing is deleted.
    aside = episode_digests(logdir, 'after_checkpoint/train_episodes')
    assert not set(after) & set(aside)
    kept = {**after, **aside}
    assert set(before) <= set(kept)
    assert all(kept[name] == digest for name, digest in before.items())
    assert len(set(after.values())) == len(after)  # no episode stored twice
    # The optimizer continued: its iteration count grew by exactly the updates made after resume
    # (a fresh optimizer would have restarted from zero).
    new_updates = int(checkpoint_value(logdir, 'counters/updates/.ATTRIBUTES/VARIABLE_VALUE'))
    new_iterations = int(checkpoint_value(logdir, 'optimizers/model/_iterations/.ATTRIBUTES/'
                                          'VARIABLE_VALUE'))
    assert new_iterations - iterations == new_updates - updates > 0
    assert int(checkpoint_value(logdir, 'state/step/.ATTRIBUTES/VARIABLE_VALUE')) == 2500


def test_sigterm_saves_a_checkpoint_before_exit(tmp_path):
    logdir = tmp_path / 'run'
    # No periodic or end-of-phase checkpoint can happen first: the only one is SIGTERM's.
    process, reader = start_training([*ATARI_TINY, '--logdir', str(logdir), '--steps', '100000',
                                      '--eval_every', '100000', '--save_every', '0'])
    try:
        # A hang guard (generous: the machine may be loaded), not a speed test.
        assert reader.wait_for(r'model_loss', 600), reader.text[-3000:]
        process.send_signal(signal.SIGTERM)
        code = process.wait(300)  # a hang guard; a loaded machine needs time to save and exit
    finally:
        if process.poll() is None:
            process.kill()
    reader.thread.join(5)
    assert code == 128 + signal.SIGTERM, reader.text[-2000:]
    match = re.search(r'Saved checkpoint (\S+) \(on SIGTERM, step (\d+)\)', reader.text)
    assert match, reader.text[-2000:]
    assert tf.train.latest_checkpoint(str(logdir / 'checkpoints')) == match.group(1)
    assert int(checkpoint_value(logdir, 'state/step/.ATTRIBUTES/VARIABLE_VALUE')) == int(
        match.group(2)) > 500


def read_until(process, pattern, timeout):
    """Reads the process's output in this thread until a line matches; the process is killed
    (a hang guard, not a speed test) if none does within `timeout`. Returns the lines read."""
    guard = threading.Timer(timeout, process.kill)
    guard.start()
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if re.search(pattern, line):
                break
    finally:
        guard.cancel()
    return lines


def test_run_outlives_the_reader_of_its_output_and_still_saves_on_sigterm(tmp_path):
    # The parent that read a run's output (bench learn, a terminal) died: a closed pipe. The run
    # trains on; SIGTERM, whose handler prints, still saves a checkpoint (it is the only one).
    logdir = tmp_path / 'run'
    process = subprocess.Popen(
        [sys.executable, '-m', 'dreamerv2_tf.train', '--configs', 'defaults', 'cartpole', 'tiny',
         '--logdir', str(logdir), '--steps', '100000', '--eval_every', '100000',
         '--save_every', '0'],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=command_env())
    try:
        lines = read_until(process, r'model_loss', 600)
        assert lines and 'model_loss' in lines[-1], ''.join(lines)[-3000:]
        process.stdout.close()  # from here on every write of the run finds no reader
        first = int(re.search(r'\[(\d+)\]', lines[-1]).group(1))  # the logged step
        deadline = time.monotonic() + 600  # a hang guard: wait for the next log line's write
        while time.monotonic() < deadline and process.poll() is None:
            rows = (logdir / 'metrics.jsonl').read_text().splitlines()
            if int(json.loads(rows[-1])['step']) > first:
                break
            time.sleep(0.2)
        assert process.poll() is None, 'the run ended when its output pipe closed'
        process.send_signal(signal.SIGTERM)
        code = process.wait(300)
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 128 + signal.SIGTERM
    assert int(checkpoint_value(logdir, 'state/step/.ATTRIBUTES/VARIABLE_VALUE')) > first


def test_pipe_safe_stream_drops_output_once_the_reader_is_gone():
    from dreamerv2_tf.train import PipeSafeStream
    read_end, write_end = os.pipe()
    stream = open(write_end, 'w', buffering=1)
    os.close(read_end)
    with pytest.raises(BrokenPipeError):  # what a plain stream does
        stream.write('line\n')
    safe = PipeSafeStream(stream)
    assert safe.write('line\n') == 5
    safe.write('more\n')
    safe.flush()
    # The descriptor now points at /dev/null, so the interpreter's last flush cannot fail.
    assert os.path.samestat(os.fstat(write_end), os.stat(os.devnull))
    stream.close()


@pytest.mark.parametrize('args, message', [
    (['--configs', 'defaults', 'atari', '--model_opt.lrr', '1'],
     "error: unknown flag '--model_opt.lrr' (did you mean 'model_opt.lr'"),
    (['--configs', 'defaults', 'atary'], "error: unknown config block 'atary'"),
    (['--configs', 'defaults', 'atari', '--task', 'atari_pongg'],
     "error: unknown Atari game 'atari_pongg' (closest: atari_pong"),
    (['--configs', 'defaults', 'atari', '--precision', '8'],
     "error: config key 'precision' must be one of 16, 32"),
])
def test_bad_input_exits_2_with_one_line(args, message, capsys):
    from dreamerv2_tf.train import main  # in-process: `python -m` exits with main's return value
    code = main(args)
    out, err = capsys.readouterr()
    output = out + err
    assert code == 2
    assert output.strip().startswith(message) and len(output.strip().splitlines()) == 1, output


def test_help_documents_every_key(capsys):
    from dreamerv2_tf.train import main
    code = main(['--configs', 'atari', '--help'])
    output = capsys.readouterr().out
    assert code == 0
    assert 'python -m dreamerv2_tf.train' in output
    assert '--train_every 16 (int)  agent steps between updates' in output


class Corridor(gymnasium.Env):
    """A tiny gymnasium env: walk right (action 1) to the end of a corridor, shown as an image.
    The goal is 12 steps away, so with a 10-step time limit every episode is cut, not ended."""

    observation_space = gymnasium.spaces.Box(0, 255, (16, 16, 3), np.uint8)
    action_space = gymnasium.spaces.Discrete(3)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.position = 0
        return self._obs(), {}

    def step(self, action):
        self.position = max(0, self.position + {0: 0, 1: 1, 2: -1}[int(action)])
        done = self.position >= 12
        return self._obs(), float(done), done, False, {}

    def _obs(self):
        image = np.zeros((16, 16, 3), np.uint8)
        image[:, self.position] = 255
        return image


def test_package_api_trains_a_custom_gymnasium_env(tmp_path):
    import dreamerv2_tf
    import dreamerv2_tf.train  # noqa: F401  (importing the submodule must not hide the function)
    config = make_config(flags=[
        '--logdir', str(tmp_path / 'custom'), '--steps', '400', '--prefill', '100',
        '--eval_every', '200', '--log_every', '100', '--time_limit', '10', '--train_every', '10',
        '--replay.minlen', '8', '--replay.maxlen', '8', '--dataset.length', '8',
        '--export_every', '150',
        '--encoder.mlp_keys', '$^', '--decoder.mlp_keys', '$^'])
    summary = dreamerv2_tf.train(Corridor, config)
    assert summary['step'] >= 400
    logdir = tmp_path / 'custom'
    episode = load_episode(sorted((logdir / 'train_episodes').glob('*.npz'))[0])
    assert episode['image'].shape[1:] == (64, 64, 3)  # resized for the networks
    assert episode['action'].shape[1:] == (3,)  # one-hot
    # Time-limit cuts end episodes without marking them terminal (the original marked them).
    assert len(episode['reward']) == 11
    assert episode['is_last'][-1] and not episode['is_terminal'].any()
    assert any('eval_return' in line for line in metrics_lines(logdir))
    # export_every wrote servable versions named by their step: prefill ends at step 100 (ten
    # 10-step episodes), then one every 150 steps.
    versions = sorted(int(p.name) for p in (logdir / 'export').iterdir())
    assert versions == [250, 400]
    model = tf.saved_model.load(str(logdir / 'export' / str(versions[-1])))
    assert int(model.signatures['metadata']()['step']) == versions[-1]
