"""Two training workers on 127.0.0.1 with TF_CONFIG (MultiWorkerMirroredStrategy): a tiny Atari
run ends with the same weights on both, and killing one worker makes the other exit with an
error naming it instead of hanging. Every wait has a timeout, so a hang fails the test."""

import json
import re
import signal
import socket
import subprocess
import sys
import time

from conftest import ATARI_TINY, command_env

# Small and short: few env steps, time-limited episodes, no evaluation episodes. The heartbeat
# timeout is the default 60 s: with 20 s a CI run (two test processes and two workers on two
# cores) once saw the chief miss its own heartbeats while both workers resumed, and fail.
FLAGS = [*ATARI_TINY, '--distribute', 'multiworker', '--distribute_timeout', '60',
         '--prefill', '100', '--time_limit', '100', '--eval_eps', '0', '--log_every', '50',
         '--train_every', '10', '--pretrain', '1']
HANG_GUARD = 900  # seconds for a whole run of a worker: only reached if something hangs
# (a lost peer is detected by the workers' pings; this guards against anything else)


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(('127.0.0.1', 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_workers(logdir, steps, ports):
    cluster = {'worker': [f'127.0.0.1:{p}' for p in ports]}
    workers = []
    for index in range(len(ports)):
        env = dict(command_env(), TF_CONFIG=json.dumps(
            {'cluster': cluster, 'task': {'type': 'worker', 'index': index}}))
        log = open(logdir.parent / f'{logdir.name}_worker{index}_{steps}.log', 'w+')
        process = subprocess.Popen(
            [sys.executable, '-m', 'dreamerv2_tf.train', *FLAGS, '--logdir', str(logdir),
             '--steps', str(steps)], stdout=log, stderr=subprocess.STDOUT, env=env)
        workers.append((process, log))
    return workers


def finish(workers, timeout=HANG_GUARD):
    """(return code, output) of each worker; kills everything left on timeout."""
    deadline = time.monotonic() + timeout
    results = []
    try:
        for process, log in workers:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for process, log in workers:
            if process.poll() is None:
                process.kill()
                process.wait()
            log.seek(0)
            results.append((process.returncode, log.read()))
            log.close()
    return results


def test_two_workers_train_in_step_and_report_a_lost_worker(tmp_path):
    logdir = tmp_path / 'run'
    workers = start_workers(logdir, 260, free_ports(2))
    (code0, out0), (code1, out1) = finish(workers)
    assert code0 == 0, out0[-3000:]
    assert code1 == 0, out1[-3000:]
    digests = [re.findall(r'Weights digest (\w+)', out) for out in (out0, out1)]
    assert digests[0] and digests[0] == digests[1], digests
    updates = [re.findall(r'"updates": (\d+)', (logdir / f'worker{i}' / 'metrics.jsonl')
                          .read_text()) for i in range(2)]
    assert updates[0] and updates[0][-1] == updates[1][-1]  # the same number of updates
    assert int(updates[0][-1]) > 10
    # The chief alone writes checkpoints (under the logdir) and TensorBoard events.
    assert list((logdir / 'checkpoints').glob('ckpt-*.index'))
    assert not (logdir / 'worker1' / 'checkpoints').exists()
    assert list((logdir / 'worker0').glob('events.out.tfevents.*'))
    assert not list((logdir / 'worker1').glob('events.out.tfevents.*'))

    # Resume both from the chief's checkpoint, then lose worker 1 while they train.
    workers = start_workers(logdir, 100000, free_ports(2))
    metrics = logdir / 'worker0' / 'metrics.jsonl'
    lines = len(metrics.read_text().splitlines())
    deadline = time.monotonic() + HANG_GUARD
    while len(metrics.read_text().splitlines()) < lines + 2:  # training is under way
        assert all(p.poll() is None for p, _ in workers), finish(workers, 5)
        assert time.monotonic() < deadline, 'the resumed workers never trained'
        time.sleep(1)
    workers[1][0].send_signal(signal.SIGKILL)
    (code0, out0), _ = finish(workers)
    assert 'Resumed from' in out0
    assert code0 == 1, out0[-3000:]
    assert re.search(r'error: lost worker 1 of the cluster', out0), out0[-3000:]
