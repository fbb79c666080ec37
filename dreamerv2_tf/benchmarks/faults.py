"""Fault-injection benchmark: a tiny training run killed, starved of disk and fed bad files.

    python -m dreamerv2_tf.bench faults [--kills 20] [--seed 0] [--root runs/faults]
        [--out benchmarks/faults] [--only kills fallback enospc nonfinite replay]

Rows (each a separate part; all run on tiny CartPole training, `--configs defaults cartpole
tiny`, in real `python -m dreamerv2_tf.train` processes):

* kills: SIGKILL at `--kills` moments of one run, each followed by a resume. The moments cycle
  through: a random time, during an episode write (after its bytes are written and synced, before
  the rename), at a random time inside a checkpoint save, and after a checkpoint's files are
  written but before its index is updated. After each kill every episode file is loaded (corrupt
  files are counted) and remembered; the resume must report the step and update counters of the
  checkpoint on disk, every remembered episode must still be present with the same contents
  (in its replay folder or set aside in `after_checkpoint/`), no replay folder may hold one
  episode twice, and the model optimizer's iteration count must have grown by exactly the updates
  made after the resume.
* fallback: the latest checkpoint truncated, or its index file overwritten with random bytes:
  the resume must warn once and restore the previous checkpoint.
* enospc: a real full disk (a 64 MiB tmpfs in a private mount namespace, filled just before an
  episode write or a checkpoint save): one-line error, exit code 1, no partial file, and a resume
  once the space is back.
* nonfinite: mixed-precision training with an overflowing loss scale injected for three updates:
  the steps are skipped (weights unchanged and finite) and counted in `<name>_skipped_steps`.
* replay: truncated, random, empty, pickled and foreign `.npz` files in a replay folder are
  skipped with a warning; the rest loads and samples.
* fuzz: `--fuzz` (200) random malformed command lines and config files given to the training
  command (in-process, training itself stubbed out): each must end with one `error:` line and
  exit code 2, never a traceback.

Progress is printed as it goes; finished parts (and finished kills) are kept in
`<root>/results.json`, so rerunning the same command continues where it stopped. The table goes
to `<out>/table.md` and `<out>/results.json`.
"""

import argparse
import hashlib
import json
import os
import pathlib
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np

PARTS = ('kills', 'fallback', 'enospc', 'nonfinite', 'replay', 'fuzz')
KILL_KINDS = ('random', 'episode write', 'checkpoint save', 'checkpoint index')
# Steps per training phase: each phase ends with a checkpoint and an evaluation.
BASE = ['--configs', 'defaults', 'cartpole', 'tiny', '--steps', '1e6', '--prefill', '200',
        '--eval_every', '300', '--log_every', '100', '--eval_eps', '1', '--save_every', '0',
        '--pretrain', '1']


def parse(argv):
    parser = argparse.ArgumentParser(prog='python -m dreamerv2_tf.bench faults',
                                     description=__doc__.split('\n\n')[0])
    parser.add_argument('--kills', type=int, default=20, help='SIGKILLs of the kills part')
    parser.add_argument('--seed', type=int, default=0, help='seed of the kill moments')
    parser.add_argument('--root', default='runs/faults', help='folder of the runs')
    parser.add_argument('--out', default='benchmarks/faults', help='report folder')
    parser.add_argument('--only', nargs='+', choices=PARTS, default=list(PARTS))
    parser.add_argument('--fuzz', type=int, default=200, help='malformed inputs of the fuzz part')
    parser.add_argument('--timeout', type=float, default=600, help='seconds any one process may '
                        'take (a hang guard)')
    args = parser.parse_args(argv)
    if args.kills < 1:
        parser.error('--kills must be at least 1')
    return args


# The child: a training process with the fault patched in from outside ------------------------

def child(plan, argv):
    """Runs `dreamerv2_tf.train.main(argv)` with the fault of `plan` (a dict) patched in."""
    kind = plan.get('kind')
    if kind == 'episode write':
        _kill_in_episode_write(plan.get('nth', 1))
    elif kind in ('checkpoint save', 'checkpoint index'):
        _kill_in_checkpoint_save(kind, plan.get('nth', 1), plan.get('delay', 0.0))
    elif kind in ('enospc episode', 'enospc checkpoint'):
        _fill_disk_before(kind, plan['filler'], plan.get('nth', 1))
    elif kind == 'nonfinite':
        _overflow_loss_scale(plan['first'], plan['count'], plan['report'])
    from dreamerv2_tf import train
    return train.main(argv)


def _die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_in_episode_write(nth):
    # Episode files are synced under their temporary name, then renamed: killing at the sync
    # leaves a complete temporary file and no episode.
    real_fsync, count = os.fsync, [0]

    def fsync(fd):
        real_fsync(fd)
        try:
            name = os.readlink(f'/proc/self/fd/{fd}')
        except OSError:
            return
        if name.endswith('.tmp') and '_episodes' in name:
            count[0] += 1
            if count[0] >= nth:
                print(f'FAULT kill in episode write {name}', flush=True)
                _die()

    os.fsync = fsync


def _kill_in_checkpoint_save(kind, nth, delay):
    import tensorflow as tf
    from tensorflow.python.checkpoint import checkpoint_management
    real_save, count = tf.train.CheckpointManager.save, [0]
    real_update = checkpoint_management.update_checkpoint_state_internal

    def save(self, *args, **kwargs):
        count[0] += 1
        if count[0] < nth:
            return real_save(self, *args, **kwargs)
        print(f'FAULT kill in checkpoint save ({kind})', flush=True)
        if kind == 'checkpoint index':
            def update(*a, **k):  # the files are written; the index is not updated
                _die()
            checkpoint_management.update_checkpoint_state_internal = update
        else:
            threading.Timer(delay, _die).start()
        result = real_save(self, *args, **kwargs)
        checkpoint_management.update_checkpoint_state_internal = real_update
        _die()  # the save finished before the timer: kill right after it
        return result

    tf.train.CheckpointManager.save = save


def _fill(filler):
    """Fills the file system of `filler` up to the last byte."""
    block = b'\0' * (1 << 20)
    with open(filler, 'ab', buffering=0) as f:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    f.write(block[:size])
            except OSError:
                continue


def _fill_disk_before(kind, filler, nth):
    count = [0]
    if kind == 'enospc episode':
        from dreamerv2_tf.run import replay
        real = replay._write_atomic

        def write(path, data):
            count[0] += 1
            if count[0] == nth:
                print(f'FAULT disk full before writing {path}', flush=True)
                _fill(filler)
            return real(path, data)

        replay._write_atomic = write
    else:
        import tensorflow as tf
        real = tf.train.CheckpointManager.save

        def save(self, *args, **kwargs):
            count[0] += 1
            if count[0] == nth:
                print('FAULT disk full before a checkpoint save', flush=True)
                _fill(filler)
            return real(self, *args, **kwargs)

        tf.train.CheckpointManager.save = save


def _overflow_loss_scale(first, count, report):
    """Updates first..first+count-1 run with every loss scale at 3e38, so that the scaled
    gradients overflow; the weights before and after each are compared."""
    import tensorflow as tf
    from dreamerv2_tf.agent import agent as agentlib
    real, calls, results = agentlib.Agent.train, [0], []

    def train(self, data, state):
        calls[0] += 1
        if not first <= calls[0] < first + count:
            return real(self, data, state)
        scales = [opt.opt.dynamic_scale for opt in self.optimizers]
        saved = [float(s.numpy()) for s in scales]
        before = [v.numpy().copy() for net in self.networks for v in net.trainable_variables]
        for scale in scales:
            scale.assign(3e38)
        state, metrics = real(self, data, state)
        after = [v.numpy() for net in self.networks for v in net.trainable_variables]
        for scale, value in zip(scales, saved):
            scale.assign(value)
        results.append({
            'unchanged': all(np.array_equal(a, b) for a, b in zip(before, after)),
            'finite': all(np.isfinite(a).all() for a in after),
            'skipped': {k: float(v) for k, v in metrics.items() if k.endswith('_skipped_steps')}})
        pathlib.Path(report).write_text(json.dumps(results))
        return state, metrics

    agentlib.Agent.train = train
    del tf


# The parent ------------------------------------------------------------------------------------

class Run:
    """A child training process whose output is collected by a thread."""

    def __init__(self, logdir, plan, extra=(), env=None, timeout=600, wrap=()):
        self.command = [*wrap, sys.executable, '-m', 'dreamerv2_tf.benchmarks.faults', 'child',
                        json.dumps(plan), *BASE, '--logdir', str(logdir), *extra]
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=dict(os.environ, PYTHONUNBUFFERED='1', **(env or {})))
        self.lines, self.timeout = [], timeout
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def text(self):
        return ''.join(self.lines)

    def wait_for(self, pattern, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            if re.search(pattern, self.text, re.M):
                return True
            if self.process.poll() is not None:
                self.thread.join(5)
                return bool(re.search(pattern, self.text, re.M))
            time.sleep(0.05)
        return False

    def kill(self, signum=signal.SIGKILL):
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.finish()

    def finish(self):
        try:
            code = self.process.wait(self.timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.thread.join(5)
        return code


def episode_digest(path):
    from dreamerv2_tf.run.replay import load_episode
    episode = load_episode(path)
    return hashlib.sha256(b''.join(episode[k].tobytes() for k in sorted(episode))).hexdigest()


def scan_episodes(logdir):
    """{folder/name: digest} of every episode file (None for unreadable ones), and the number of
    leftover temporary files."""
    from dreamerv2_tf.run.replay import EpisodeFileError, parse_filename
    found, temps = {}, 0
    for folder in ('train_episodes', 'eval_episodes'):
        for path in sorted((logdir / folder).glob('*')) if (logdir / folder).exists() else []:
            if path.name.endswith('.tmp'):
                temps += 1
            elif parse_filename(path.name):
                try:
                    found[f'{folder}/{path.name}'] = episode_digest(path)
                except (EpisodeFileError, OSError):
                    found[f'{folder}/{path.name}'] = None
    return found, temps


def checkpoint_counters(logdir):
    """(path, step, updates, model optimizer iterations) of the latest checkpoint, or None."""
    import tensorflow as tf
    path = tf.train.latest_checkpoint(str(logdir / 'checkpoints'))
    if path is None:
        return None
    reader = tf.train.load_checkpoint(path)

    def value(suffix):
        keys = [k for k in reader.get_variable_to_shape_map() if k.endswith(suffix)]
        return int(reader.get_tensor(keys[0]))
    return (path, value('state/step/.ATTRIBUTES/VARIABLE_VALUE'),
            value('counters/updates/.ATTRIBUTES/VARIABLE_VALUE'),
            value('optimizers/model/_iterations/.ATTRIBUTES/VARIABLE_VALUE'))


def present_episodes(logdir):
    """{folder/name: digest} of the replay folders and the set-aside folder (by replay folder)."""
    found, _ = scan_episodes(logdir)
    aside = logdir / 'after_checkpoint'
    if aside.exists():
        more, _ = scan_episodes(aside)
        found.update(more)
    return found


def duplicates(logdir):
    found, _ = scan_episodes(logdir)
    count = 0
    for folder in ('train_episodes', 'eval_episodes'):
        digests = [d for k, d in found.items() if k.startswith(folder) and d is not None]
        count += len(digests) - len(set(digests))
    return count


def resumed_at(text):
    match = re.search(r'Resumed from (\S+) at step (\d+) \((\d+) updates\)', text)
    return (match.group(1), int(match.group(2)), int(match.group(3))) if match else None


def has_traceback(text):
    return 'Traceback (most recent call last)' in text


def part_kills(args, root, saved, say):
    logdir = root / 'kills'
    rng = random.Random(args.seed)
    plans = []
    for index in range(args.kills):
        kind = KILL_KINDS[index % len(KILL_KINDS)] if index else 'random'
        plans.append({'kind': kind, 'nth': rng.randint(1, 3), 'delay': rng.uniform(0, 0.05),
                      'after': rng.uniform(0.0, 6.0)})
    done = saved.setdefault('kill_rows', [])
    if not done and logdir.exists():
        shutil.rmtree(logdir)
    for index in range(len(done), args.kills):
        plan = plans[index]
        before = checkpoint_counters(logdir) if logdir.exists() else None
        start = time.monotonic()
        run = Run(logdir, plan, timeout=args.timeout)
        row = {'kill': index + 1, 'kind': plan['kind']}
        if before is not None:  # a resume: the first line tells where it continued
            ok = run.wait_for(r'Resumed from|Error|Traceback')
            resumed = resumed_at(run.text)
            row['resumed'] = bool(ok and resumed and resumed[1:] == before[1:3])
            row['resumed_from'] = list(resumed) if resumed else None
            row['expected'] = list(before[:3])
        if plan['kind'] == 'random':
            # After the first checkpoint of this process, a random moment later.
            run.wait_for(r'Saved checkpoint')
            time.sleep(plan['after'])
            run.kill()
        else:
            code = run.finish()
            if 'FAULT' not in run.text:
                row['error'] = f'the fault did not fire (exit code {code})'
        row['traceback'] = has_traceback(run.text)
        episodes, temps = scan_episodes(logdir)
        row['episodes'] = len(episodes)
        row['corrupt'] = sum(d is None for d in episodes.values())
        row['temp_files'] = temps
        after = checkpoint_counters(logdir)
        if before is not None and after is not None and after[0] != before[0]:
            # Iterations made after the resume equal updates made after it.
            row['optimizer_ok'] = (after[3] - before[3]) == (after[2] - before[2])
        row['seconds'] = round(time.monotonic() - start, 1)
        # Episodes present now must all be present after the next resume.
        row['remembered'] = {k: d for k, d in episodes.items() if d is not None}
        done.append(row)
        saved.save()
        say(f"  kill {index + 1}/{args.kills} ({plan['kind']}): {row['episodes']} episodes, "
            f"{row['corrupt']} corrupt, resumed {row.get('resumed', 'n/a (first run)')}, "
            f"{row['seconds']} s")
    # The last resume runs to its first checkpoint and stops with SIGTERM.
    before = checkpoint_counters(logdir)
    run = Run(logdir, {}, timeout=args.timeout)
    run.wait_for(r'Resumed from')
    run.wait_for(r'Saved checkpoint')
    run.kill(signal.SIGTERM)
    resumed = resumed_at(run.text)
    after = checkpoint_counters(logdir)
    final = {'resumed': bool(resumed and resumed[1:] == before[1:3]),
             'optimizer_ok': (after[3] - before[3]) == (after[2] - before[2]),
             'traceback': has_traceback(run.text)}
    present = present_episodes(logdir)
    lost = 0
    for row in done:
        lost += sum(present.get(k) != d for k, d in row['remembered'].items())
    resumes = [r for r in done[1:]] + [final]
    return {
        'kills tried': args.kills,
        'kinds': {kind: sum(r['kind'] == kind for r in done) for kind in KILL_KINDS},
        'resumed cleanly': sum(bool(r.get('resumed')) and not r['traceback'] for r in resumes),
        'resumes': len(resumes),
        'episodes lost': lost,
        'corrupt files found': sum(r['corrupt'] for r in done),
        'temporary files left by kills (removed at resume)': sum(r['temp_files'] for r in done),
        'duplicate episodes in a replay folder': duplicates(logdir),
        'optimizer iterations = updates after resume': all(
            r.get('optimizer_ok', True) for r in resumes),
        'faults that did not fire': sum('error' in r for r in done),
        'set aside episodes': len(present_episodes(logdir / 'after_checkpoint')
                                  if (logdir / 'after_checkpoint').exists() else {}),
    }


def part_fallback(args, root, say):
    logdir = root / 'fallback'
    if logdir.exists():
        shutil.rmtree(logdir)
    run = Run(logdir, {}, timeout=args.timeout)
    ok = run.wait_for(r'Saved checkpoint \S+ck\w*-2 ') or run.wait_for(r'Saved checkpoint.*\n.*'
                                                                      r'Saved checkpoint')
    run.kill(signal.SIGTERM)
    results = {}
    for damage in ('truncated data file', 'random bytes in the index file'):
        import tensorflow as tf
        latest = tf.train.latest_checkpoint(str(logdir / 'checkpoints'))
        previous = [p for p in tf.train.get_checkpoint_state(
            str(logdir / 'checkpoints')).all_model_checkpoint_paths if p != latest][-1]
        if damage.startswith('truncated'):
            data = next(pathlib.Path(latest).parent.glob(pathlib.Path(latest).name + '.data*'))
            with open(data, 'r+b') as f:
                f.truncate(os.path.getsize(data) // 2)
        else:
            with open(latest + '.index', 'r+b') as f:
                f.seek(8)
                f.write(os.urandom(64))
        expected = checkpoint_counters_at(previous)
        run = Run(logdir, {}, timeout=args.timeout)
        run.wait_for(r'Resumed from|Traceback|error:')
        run.wait_for(r'Saved checkpoint')
        code = run.kill(signal.SIGTERM)
        warnings = [line for line in run.lines if 'unreadable' in line]
        resumed = resumed_at(run.text)
        results[damage] = {
            'warnings': len(warnings), 'resumed_from_previous': bool(
                resumed and resumed[0] == previous and resumed[1:] == expected),
            'traceback': has_traceback(run.text), 'exit': code,
            'ok': ok and len(warnings) == 1 and bool(resumed) and resumed[0] == previous and
            resumed[1:] == expected and not has_traceback(run.text)}
        say(f'  fallback, {damage}: {results[damage]}')
    return results


def checkpoint_counters_at(path):
    import tensorflow as tf
    reader = tf.train.load_checkpoint(path)

    def value(suffix):
        keys = [k for k in reader.get_variable_to_shape_map() if k.endswith(suffix)]
        return int(reader.get_tensor(keys[0]))
    return (value('state/step/.ATTRIBUTES/VARIABLE_VALUE'),
            value('counters/updates/.ATTRIBUTES/VARIABLE_VALUE'))


def part_enospc(args, root, say):
    """Runs `enospc-inner` in a private user and mount namespace (tmpfs needs one)."""
    if not shutil.which('unshare'):
        return {'skipped': 'no unshare command'}
    report = root / 'enospc.json'
    report.unlink(missing_ok=True)
    command = ['unshare', '-rm', sys.executable, '-m', 'dreamerv2_tf.benchmarks.faults',
               'enospc-inner', str(root), str(report), str(args.timeout)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=4 * args.timeout)
    if not report.exists():
        return {'error': (result.stdout + result.stderr)[-500:]}
    results = json.loads(report.read_text())
    for name, row in results.items():
        say(f'  disk full, {name}: {row}')
    return results


def enospc_inner(root, report, timeout):
    """Inside the namespace: per case, a 64 MiB tmpfs logdir filled just before the write."""
    mount = pathlib.Path(root).resolve() / 'enospc_mount'
    mount.mkdir(parents=True, exist_ok=True)
    results = {}
    for case, nth in (('enospc episode', 4), ('enospc checkpoint', 1)):
        subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=64m', 'tmpfs', str(mount)],
                       check=True)
        logdir, filler = mount / 'run', mount / 'filler'
        run = Run(logdir, {'kind': case, 'filler': str(filler), 'nth': nth}, timeout=timeout)
        code = run.finish()
        errors = [line for line in run.lines if line.startswith('error:')]
        temps = ([p.name for p in logdir.rglob('*') if p.name.endswith(('.tmp', '_temp'))])
        metrics_ok = all(_json_ok(line) for line in (logdir / 'metrics.jsonl').read_text()
                         .splitlines()) if (logdir / 'metrics.jsonl').exists() else True
        before = _latest_step(logdir)
        filler.unlink()  # the space is back
        again = Run(logdir, {}, timeout=timeout)
        again.wait_for(r'Resumed from|Traceback|error:')
        resumed_ok = again.wait_for(r'Saved checkpoint')
        again.kill(signal.SIGTERM)
        resumed = resumed_at(again.text)
        results[case.split()[1]] = {
            'exit': code, 'error line': errors[0].strip()[:150] if errors else None,
            'one error line': len(errors) == 1, 'traceback': has_traceback(run.text),
            'partial files': temps, 'metrics.jsonl whole': metrics_ok,
            'resumed': bool(resumed_ok and (resumed is not None or before is None)),
            'resumed at step': resumed[1] if resumed else None}
        subprocess.run(['umount', '-l', str(mount)], check=False)
    pathlib.Path(report).write_text(json.dumps(results))
    return 0


def _json_ok(line):
    try:
        json.loads(line)
        return True
    except ValueError:
        return False


def _latest_step(logdir):
    try:
        return checkpoint_counters(logdir)
    except Exception:  # noqa: BLE001
        return None


def part_nonfinite(args, root, say):
    logdir = root / 'nonfinite'
    if logdir.exists():
        shutil.rmtree(logdir)
    report = root / 'nonfinite.json'
    report.unlink(missing_ok=True)
    count = 3
    run = Run(logdir, {'kind': 'nonfinite', 'first': 5, 'count': count, 'report': str(report)},
              extra=['--precision', '16', '--log_every', '20'], timeout=args.timeout)
    run.wait_for(r'Saved checkpoint')
    run.kill(signal.SIGTERM)
    injected = json.loads(report.read_text()) if report.exists() else []
    lines = [json.loads(line) for line in (logdir / 'metrics.jsonl').read_text().splitlines()]
    logged = {}
    for line in lines:
        for key, value in line.items():
            if key.endswith('_skipped_steps') and value is not None:
                logged[key] = logged.get(key, 0) + value
    import tensorflow as tf
    path = tf.train.latest_checkpoint(str(logdir / 'checkpoints'))
    reader = tf.train.load_checkpoint(path)
    finite = all(np.isfinite(reader.get_tensor(k)).all() for k, dtype in
                 reader.get_variable_to_dtype_map().items()
                 if k.startswith('variables/') and dtype.is_floating)
    result = {'injected': len(injected), 'skipped (weights unchanged)': sum(
        r['unchanged'] for r in injected), 'logged skipped steps': logged,
        'weights finite in checkpoint': finite, 'traceback': has_traceback(run.text)}
    result['ok'] = (len(injected) == count and all(r['unchanged'] for r in injected) and finite
                    and all(logged.get(f'{n}_skipped_steps', 0) >= count
                            for n in ('model', 'actor', 'critic')))
    say(f'  non-finite gradients: {result}')
    return result


def part_replay(args, root, say):
    import logging
    from dreamerv2_tf.run.replay import Replay, save_episode
    folder = root / 'replay' / 'train_episodes'
    if folder.parent.exists():
        shutil.rmtree(folder.parent)
    rng = np.random.default_rng(args.seed)

    def episode(length):
        return {'vector': rng.normal(size=(length + 1, 4)).astype(np.float32),
                'reward': np.ones(length + 1, np.float32),
                'is_first': np.arange(length + 1) == 0, 'is_last': np.arange(length + 1) == length,
                'action': rng.normal(size=(length + 1, 2)).astype(np.float32)}

    good = [save_episode(folder, episode(20)) for _ in range(4)]
    bad = {}
    template = good[0].name.split('-')

    def name(length):
        stamp = f'20000101T000000.{len(bad):06d}'
        return f'{stamp}-{os.urandom(16).hex()}-{length}.npz'
    data = good[0].read_bytes()
    bad['truncated'] = folder / name(20)
    bad['truncated'].write_bytes(data[:len(data) // 2])
    bad['random bytes'] = folder / name(20)
    bad['random bytes'].write_bytes(os.urandom(2000))
    bad['empty'] = folder / name(20)
    bad['empty'].write_bytes(b'')
    bad['pickled object array'] = folder / name(3)
    with open(bad['pickled object array'], 'wb') as f:
        np.savez(f, vector=np.array([{'a': 1}] * 4, dtype=object))
    bad['foreign keys'] = folder / name(9)
    with open(bad['foreign keys'], 'wb') as f:
        np.savez(f, something=np.arange(10))
    bad['ragged'] = folder / name(20)
    with open(bad['ragged'], 'wb') as f:
        np.savez(f, **{**episode(20), 'reward': np.ones(5, np.float32)})
    bad['not an episode name'] = folder / 'notes.npz'
    bad['not an episode name'].write_bytes(data)
    del template
    records = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Collect(logging.WARNING)
    logger = logging.getLogger('dreamerv2_tf.run.replay')
    logger.addHandler(handler)
    try:
        replay = Replay(folder, minlen=1, maxlen=10)
        chunks = replay.chunks(10, np.random.default_rng(0))
        batches = [next(chunks) for _ in range(20)]
    finally:
        logger.removeHandler(handler)
    warned = {kind: any(path.name in message for message in records)
              for kind, path in bad.items()}
    result = {'bad files': len(bad), 'warned about': sum(warned.values()),
              'good episodes loaded': replay.stats['loaded_episodes'],
              'sampled chunks': len(batches), 'not warned': [k for k, v in warned.items() if not v]}
    result['ok'] = (all(warned.values()) and replay.stats['loaded_episodes'] == len(good)
                    and all(set(b) >= {'vector', 'reward'} for b in batches))
    say(f'  replay corruption: {result}')
    return result


# Fuzzing -------------------------------------------------------------------------------------

_WORDS = ('steps', 'model_opt.lr', 'rssm.deter', 'precision', 'jit', 'replay.capacity',
          'render_size', 'task', 'encoder.mlp_keys', 'actor_ent', 'deterministic', 'seed')
_BAD_VALUES = ('abc', '', '1.5.2', 'nan?', '--', '[1, 2', '{}', 'True False', '\x00', 'é' * 3,
               '1e400', '-', '0x1g', 'None', '9' * 400, 'linear(1,2)', 'linear(a,b,c)')
_BAD_YAML = (
    'steps: [1, 2\n', 'steps: 1\n  bad indent: 2\n', '- a\n- b\n', '"just a string"\n',
    '42\n', 'steps: !!python/object:os.system echo\n', 'rssm: {deter: [[1]]}\n',
    'rssm: {deter: abc}\n', 'unknown_key: 1\n', 'model_opt: {lrr: 1}\n', 'steps: {a: 1}\n',
    'precision: 8\n', 'jit: maybe\n', '\tsteps: 1\n', 'steps: 1\nsteps: 2\n',
    'a: &x [1]\nb: *y\n', '{' * 200 + '}' * 200, 'render_size: []\n',
    'render_size: [1, a]\n', 'log_keys_video: [1, "a"]\n', '"[": 1\n', 'encoder: 5\n',
    'task: 5\nseed: [1]\n', 'actor_ent: linear(1)\n', 'replay: {capacity: true}\n')


def fuzz_inputs(rng, count, folder):
    """`count` malformed (argv, description) pairs for the training command; config files are
    written to `folder`."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cases = []
    for index in range(count):
        kind = rng.randrange(9)
        if kind == 0:  # unknown or misspelt flag
            word = rng.choice(_WORDS)
            cut = rng.randrange(len(word))
            argv = [f'--{word[:cut]}{rng.choice("xyz_.")}{word[cut:]}', '1']
        elif kind == 1:  # a known flag with a bad value
            argv = [f'--{rng.choice(_WORDS)}', rng.choice(_BAD_VALUES)]
        elif kind == 2:  # a flag without a value, or values without a flag
            argv = rng.choice([[f'--{rng.choice(_WORDS)}'], ['value', '--steps', '5'],
                               ['--steps', '1', '2'], ['--', '5'], ['--=1']])
        elif kind == 3:  # broken regex keys
            argv = [rng.choice(['--[', '--(.*', r'--.*\.norm(', '--*', '--a{2,1}', '--.*x$']),
                    'layer']
        elif kind == 4:  # bad config blocks
            argv = ['--configs', *rng.choice([[], ['nonexistent'], ['defaults', 'atary'],
                                              [str(folder)], [str(folder / 'missing.yaml')]])]
        elif kind in (5, 6):  # malformed YAML config files
            path = folder / f'case{index}.yaml'
            path.write_text(rng.choice(_BAD_YAML))
            argv = ['--configs', 'defaults', str(path)]
        elif kind == 7:  # binary and non-UTF-8 config files
            path = folder / f'case{index}.yaml'
            path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
                             + b'\xff\xfe: [')
            argv = ['--configs', str(path)]
        else:  # bad tasks and mixed garbage
            argv = rng.choice([['--task', rng.choice(['atari_', 'dmc_x', 'nosuite_x', 'atari_pongg',
                                                      'dmc_walker', '', 'crafter_nope'])],
                               ['--seed', '1', 'junk', '--steps'],
                               ['--render_size', '64', 'x'], ['--precision=', '32']])
        cases.append(argv)
    return cases


def try_command(argv):
    """Runs the training command's `main(argv)` in-process with training stubbed out; returns
    (exit code or None if it reached training, output, traceback text or None)."""
    import contextlib
    import io
    import traceback
    from dreamerv2_tf import train
    out = io.StringIO()
    real = train.train
    train.train = lambda **kwargs: None  # reaching here means the input was valid
    reached = []
    train.train = lambda **kwargs: reached.append(kwargs)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = train.main(list(argv))
    except SystemExit as e:
        code, trace = e.code, None
    except BaseException:  # noqa: BLE001 - what the fuzzing looks for
        return None, out.getvalue(), traceback.format_exc()
    else:
        trace = None
    finally:
        train.train = real
    return (None if reached else code), out.getvalue(), trace


def part_fuzz(args, root, say):
    rng = random.Random(args.seed)
    cases = fuzz_inputs(rng, args.fuzz, root / 'fuzz')
    result = {'inputs': len(cases), 'tracebacks': 0, 'exit 2 with one error line': 0,
              'valid (reached training)': 0, 'other': 0, 'examples': []}
    for argv in cases:
        code, output, trace = try_command(argv)
        lines = output.strip().splitlines()
        if trace:
            result['tracebacks'] += 1
            result['examples'].append([argv, trace.strip().splitlines()[-1]])
        elif code is None:
            result['valid (reached training)'] += 1
        elif code == 2 and len(lines) == 1 and lines[0].startswith('error: '):
            result['exit 2 with one error line'] += 1
        else:
            result['other'] += 1
            result['examples'].append([argv, code, lines[:3]])
    say(f"  fuzz: {result['inputs']} inputs, {result['tracebacks']} tracebacks, "
        f"{result['exit 2 with one error line']} one-line errors, {result['other']} other")
    return result


class Saved(dict):
    """Results kept in `<root>/results.json` so that a rerun continues."""

    def __init__(self, path, settings):
        self.path = path
        data = json.loads(path.read_text()) if path.exists() else {}
        if data.get('settings') != settings:
            data = {'settings': settings}
        super().__init__(data)

    def save(self):
        tmp = self.path.with_name(self.path.name + '.tmp')
        tmp.write_text(json.dumps(self, indent=1))
        tmp.replace(self.path)


def table(saved):
    lines = ['| fault | tried | outcome | expected |', '|---|---|---|---|']
    kills = saved.get('kills')
    if kills:
        lines.append(f"| SIGKILL ({', '.join(f'{v} {k}' for k, v in kills['kinds'].items())}) | "
                     f"{kills['kills tried']} | resumed cleanly {kills['resumed cleanly']}/"
                     f"{kills['resumes']}, episodes lost {kills['episodes lost']}, corrupt "
                     f"files {kills['corrupt files found']}, duplicates "
                     f"{kills['duplicate episodes in a replay folder']}, optimizer iterations = "
                     f"updates: {kills['optimizer iterations = updates after resume']} | "
                     f"all resumed, 0 lost, 0 corrupt, 0 duplicates, True |")
    for damage, row in (saved.get('fallback') or {}).items():
        lines.append(f"| latest checkpoint: {damage} | 1 | {row['warnings']} warning, resumed "
                     f"from the previous: {row['resumed_from_previous']}, traceback: "
                     f"{row['traceback']} | 1 warning, previous restored |")
    for case, row in (saved.get('enospc') or {}).items():
        if not isinstance(row, dict):
            lines.append(f'| disk full | - | {case}: {row} | |')
            continue
        lines.append(f"| disk full while writing {'an' if case == 'episode' else 'a'} {case} | 1 "
                     f"| exit {row['exit']}, `{row['error line']}`, traceback {row['traceback']}"
                     f", partial files {len(row['partial files'])}, resumed {row['resumed']} | "
                     f"one-line error, no partial file, resumes |")
    nonfinite = saved.get('nonfinite')
    if nonfinite:
        lines.append(f"| non-finite gradients (fp16, {nonfinite['injected']} updates) | "
                     f"{nonfinite['injected']} | skipped with weights unchanged "
                     f"{nonfinite['skipped (weights unchanged)']}, logged "
                     f"{nonfinite['logged skipped steps']}, weights finite "
                     f"{nonfinite['weights finite in checkpoint']} | skipped and counted |")
    replay = saved.get('replay')
    if replay:
        lines.append(f"| bad files in a replay folder | {replay['bad files']} | warned about "
                     f"{replay['warned about']}, good episodes loaded "
                     f"{replay['good episodes loaded']}/4, sampling works "
                     f"{replay['sampled chunks'] == 20} | each skipped with a warning |")
    fuzz = saved.get('fuzz')
    if fuzz:
        lines.append(f"| malformed command lines and config files | {fuzz['inputs']} | "
                     f"tracebacks {fuzz['tracebacks']}, one-line error + exit 2 "
                     f"{fuzz['exit 2 with one error line']}, reached training "
                     f"{fuzz['valid (reached training)']}, other {fuzz['other']} | 0 tracebacks |")
    return '\n'.join(lines)


def main(argv):
    args = parse(argv)
    root, out = pathlib.Path(args.root), pathlib.Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    saved = Saved(root / 'results.json', {'kills': args.kills, 'seed': args.seed})

    def say(line):
        print(line, flush=True)

    parts = {'kills': lambda: part_kills(args, root, saved, say),
             'fallback': lambda: part_fallback(args, root, say),
             'enospc': lambda: part_enospc(args, root, say),
             'nonfinite': lambda: part_nonfinite(args, root, say),
             'replay': lambda: part_replay(args, root, say),
             'fuzz': lambda: part_fuzz(args, root, say)}
    for name in args.only:
        if name in saved:
            say(f'{name}: done before (delete {root}/results.json to redo)')
            continue
        say(f'{name} ...')
        start = time.monotonic()
        saved[name] = parts[name]()
        saved.save()
        say(f'{name}: finished in {time.monotonic() - start:.0f} s')
    out.mkdir(parents=True, exist_ok=True)
    text = table(saved)
    (out / 'table.md').write_text(
        f"Command: `{shlex.join(['python', '-m', 'dreamerv2_tf.bench', 'faults', *argv])}`\n\n"
        + text + '\n')
    (out / 'results.json').write_text(json.dumps(
        {k: v for k, v in saved.items() if k != 'kill_rows'}, indent=1))
    print(text)
    return 0


if __name__ == '__main__':
    if sys.argv[1:2] == ['child']:
        sys.exit(child(json.loads(sys.argv[2]), sys.argv[3:]))
    if sys.argv[1:2] == ['enospc-inner']:
        sys.exit(enospc_inner(sys.argv[2], sys.argv[3], float(sys.argv[4])))
    sys.exit(main(sys.argv[1:]))
