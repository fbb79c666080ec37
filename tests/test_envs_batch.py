"""BatchEnv: stacking and reset masks in every mode, error reports, worker death, shutdown."""

import functools
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from dreamerv2_tf.envs import BatchEnv, EnvWorkerError, Space, make_batch_env

from envs_helpers import TESTS_DIR, CounterEnv, check_obs, make_config, process_alive

MODES = ['none', 'thread', 'process']


def onehot(*choices):
    return {'action': np.eye(3, dtype=np.float32)[list(choices)]}


def wait_until(condition, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.mark.parametrize('mode', MODES)
def test_reset_mask_stacking_and_errors(mode):
    with BatchEnv([CounterEnv] * 3, mode) as env:
        assert len(env) == 3 and env.act_space == CounterEnv.act_space
        first = env.step(None, np.ones(3, bool))
        assert set(first) == set(CounterEnv.obs_space)
        assert first['count'].shape == (3,) and first['count'].dtype == np.int32
        assert first['last'].shape == (3, 3) and first['is_first'].dtype == bool
        assert first['is_first'].all()
        env.step(onehot(0, 1, 2), np.zeros(3, bool))
        obs = env.step(onehot(1, 0, 0), np.array([False, True, False]))
        assert obs['count'].tolist() == [2, 0, 2]  # env 1 was reset, its action ignored
        assert obs['is_first'].tolist() == [False, True, False]
        assert np.array_equal(obs['last'], np.eye(3, dtype=np.float32)[[1, 0, 0]] * [[1], [0], [1]])
        for index in range(3):
            check_obs({k: v[index] for k, v in obs.items()}, env.obs_space)
        pids = set(obs['pid'].tolist())
        assert len(pids) == (3 if mode == 'process' else 1)
        assert (os.getpid() in pids) == (mode != 'process')
        # Env 2 raises (choice 2 twice); the others' answers are still collected, so the batch
        # keeps working after the error.
        env.step(onehot(0, 0, 2), np.zeros(3, bool))
        with pytest.raises(Exception) as error:
            env.step(onehot(0, 0, 2), np.zeros(3, bool))
        assert 'choice 2 twice' in str(error.value)
        if mode != 'none':
            assert isinstance(error.value, EnvWorkerError)
            assert 'env worker 2' in str(error.value) and 'Traceback' in str(error.value)
        obs = env.step(onehot(0, 0, 0), np.zeros(3, bool))
        assert obs['count'].tolist() == [5, 3, 4]  # env 2 failed once, env 1 was reset
        with pytest.raises(ValueError, match='leading dimension'):
            env.step({'action': np.zeros((2, 3), np.float32)}, np.zeros(3, bool))


@pytest.mark.parametrize('mode', ['thread', 'process'])
def test_constructor_failure_is_reported_and_the_other_workers_stop(mode):
    constructors = [CounterEnv, functools.partial(CounterEnv, fail_on_start=True)]
    with pytest.raises(EnvWorkerError, match='told to fail while starting') as error:
        BatchEnv(constructors, mode)
    assert 'env worker 1' in str(error.value)


def test_worker_process_exiting_while_starting_is_reported_with_its_exit_code():
    start = time.monotonic()
    with pytest.raises(EnvWorkerError, match='env worker 0 .*exited with code 3 during start'):
        BatchEnv([functools.partial(os._exit, 3)], 'process')
    assert time.monotonic() - start < 10


def test_close_is_idempotent_and_stops_the_processes():
    env = BatchEnv([CounterEnv] * 2, 'process')
    pids = env.pids
    assert len(pids) == 2 and all(process_alive(pid) for pid in pids)
    env.close()
    env.close()
    assert not any(process_alive(pid) for pid in pids)
    with pytest.raises(RuntimeError, match='closed'):
        env.step(None, np.ones(2, bool))


def test_lambda_constructors_work_in_processes_through_cloudpickle():
    pytest.importorskip('cloudpickle')
    with BatchEnv([lambda: CounterEnv()], 'process') as env:
        assert env.step(None, np.ones(1, bool))['count'].tolist() == [0]


def test_four_atari_processes_batch_observations_and_a_killed_worker_fails_fast():
    config = make_config(task='atari_pong', action_repeat=4, time_limit=27000, envs=4,
                         envs_parallel='process', seed=0)
    env = make_batch_env(config)
    try:
        assert len(env) == 4 and len(env.pids) == 4 and os.getpid() not in env.pids
        assert env.obs_space['image'] == Space(np.uint8, (64, 64, 1), 0, 255)
        obs = env.step(None, np.ones(4, bool))
        assert obs['image'].shape == (4, 64, 64, 1) and obs['image'].dtype == np.uint8
        assert obs['ram'].shape == (4, 128) and obs['reward'].dtype == np.float32
        assert obs['is_first'].all()
        rng = np.random.RandomState(0)
        rams = []
        for _ in range(20):
            action = {'action': np.eye(6, dtype=np.float32)[rng.randint(6, size=4)]}
            obs = env.step(action, np.zeros(4, bool))
            assert not obs['is_first'].any() and obs['image'].shape == (4, 64, 64, 1)
            rams.append(obs['ram'])
        rams = np.stack(rams, 1)
        assert len({rams[i].tobytes() for i in range(4)}) == 4  # seeds 0..3 give different games

        os.kill(env.pids[2], signal.SIGKILL)
        start = time.monotonic()
        with pytest.raises(EnvWorkerError) as error:
            env.step(action, np.zeros(4, bool))
        assert time.monotonic() - start < 60  # a hang guard (the worker poll is 0.2 s)
        assert 'env worker 2' in str(error.value) and 'SIGKILL' in str(error.value)
    finally:
        pids = env.pids
        env.close()
    assert not any(process_alive(pid) for pid in pids)


# Shutdown of a parent program -------------------------------------------------------------------

SCRIPT = textwrap.dedent('''
    import signal
    import sys
    import numpy as np
    # Ctrl-C as in a terminal: a shell that starts the test run in the background (`cmd &`)
    # leaves SIGINT ignored, and Python keeps an ignored SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.path.insert(0, {tests!r})
    from dreamerv2_tf.envs import BatchEnv
    from envs_helpers import CounterEnv
    env = BatchEnv([CounterEnv] * 2, 'process')
    print(*env.pids, flush=True)
    action = {{'action': np.eye(3, dtype=np.float32)[[0, 1]]}}
    env.step(None, np.ones(2, bool))
    if {mode!r} == 'exit':
        sys.exit(0)  # without close(): the exit hook must stop the workers
    while True:
        env.step(action, np.zeros(2, bool))
''')


def start_parent(tmp_path, mode):
    script = tmp_path / 'parent.py'
    script.write_text(SCRIPT.format(tests=str(TESTS_DIR), mode=mode))
    # Its own session, like a program started from a terminal, so that we can "press Ctrl-C" by
    # signalling its process group.
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    pids = [int(pid) for pid in parent.stdout.readline().split()]
    assert len(pids) == 2, parent.stderr.read()
    return parent, pids


@pytest.mark.parametrize('how', ['ctrl-c', 'exit', 'sigkill'])
def test_parent_shutdown_leaves_no_worker_behind(tmp_path, how):
    parent, workers = start_parent(tmp_path, 'exit' if how == 'exit' else 'loop')
    try:
        assert all(process_alive(pid) for pid in workers) or how == 'exit'
        if how == 'ctrl-c':
            time.sleep(0.3)  # let it step for a while
            os.killpg(parent.pid, signal.SIGINT)
        elif how == 'sigkill':
            os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=60)  # a hang guard
        assert wait_until(lambda: not any(process_alive(pid) for pid in workers), 30)
        if how == 'ctrl-c':
            assert 'KeyboardInterrupt' in parent.stderr.read()
        if how == 'exit':
            assert parent.returncode == 0
    finally:
        if parent.poll() is None:
            parent.kill()
        for pid in workers:
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)
