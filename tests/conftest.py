"""Shared fixtures: tiny configs, Atari- and DMC-like spaces, and a learnable fixed batch."""

import fcntl
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import dreamerv2_tf  # noqa: F401  (sets TF/MuJoCo process defaults before TensorFlow loads)
from dreamerv2_tf import config as configlib
from dreamerv2_tf.envs.space import Space


def make_config(*blocks, flags=(), **overrides):
    """defaults + blocks (+ tiny unless 'full' is passed) + overrides."""
    blocks = list(blocks)
    full = 'full' in blocks
    blocks = [b for b in blocks if b != 'full'] + ([] if full else ['tiny'])
    config = configlib.compose(blocks)
    config = configlib.parse_flags(config, list(flags))
    return config.update(overrides) if overrides else config


def make_spaces(channels=1, actions=6, discrete=True, vectors=None):
    obs = {
        'image': Space(np.uint8, (64, 64, channels)),
        'reward': Space(np.float32),
        'is_first': Space(bool),
        'is_last': Space(bool),
        'is_terminal': Space(bool),
    }
    for name, size in (vectors or {}).items():
        obs[name] = Space(np.float32, (size,))
    if discrete:
        act = {'action': Space(np.float32, (actions,), 0, 1, discrete=True)}
    else:
        act = {'action': Space(np.float32, (actions,), -1, 1)}
    return obs, act


def make_batch(batch, length, obs_space, act_space, seed=0):
    """A fixed batch the world model can learn: bright squares moving over a dark background."""
    rng = np.random.RandomState(seed)
    data = {}
    for key, space in obs_space.items():
        if len(space.shape) == 3:
            images = np.full((batch, length) + space.shape, 40, np.uint8)
            for b in range(batch):
                x0, y0 = rng.randint(0, 48, 2)
                for t in range(length):
                    x = (x0 + 2 * t) % 48
                    images[b, t, y0:y0 + 16, x:x + 16] = 220
            data[key] = images
        elif space.dtype == bool:
            data[key] = np.zeros((batch, length), bool)
        else:
            data[key] = rng.randn(batch, length, *space.shape).astype(space.dtype)
    data['is_first'][:, 0] = True
    size = act_space['action'].shape[0]
    if act_space['action'].discrete:
        data['action'] = np.eye(size, dtype=np.float32)[rng.randint(0, size, (batch, length))]
    else:
        data['action'] = rng.uniform(-1, 1, (batch, length, size)).astype(np.float32)
    return data


@pytest.fixture
def config():
    return make_config


@pytest.fixture
def spaces():
    return make_spaces


@pytest.fixture
def fixed_batch():
    return make_batch


# Subprocess runs of the commands --------------------------------------------------------------

ATARI_TINY = ['--configs', 'defaults', 'atari', 'tiny', '--task', 'atari_pong']
ATARI_RUN_STEPS = 2000  # the prefill episode (~850 steps), training, final eval and checkpoint


def command_env():
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    env.pop('TF_CPP_MIN_LOG_LEVEL', None)
    return env


def run_module(module, args, timeout=300, cwd=None):
    """Runs `python -m module args`; returns (returncode, stdout + stderr, seconds)."""
    start = time.monotonic()
    result = subprocess.run([sys.executable, '-m', module, *args], capture_output=True,
                            text=True, timeout=timeout, cwd=cwd, env=command_env())
    return result.returncode, result.stdout + result.stderr, time.monotonic() - start


@pytest.fixture(scope='session')
def atari_run(tmp_path_factory):
    """One tiny Atari Pong training run of ATARI_RUN_STEPS steps, shared by the tests that need a
    trained agent (end-to-end checks, evaluate, export). With pytest-xdist the first worker that
    needs it trains while the others wait on a file lock, then all read the same logdir."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get('PYTEST_XDIST_WORKER'):
        root = root.parent  # shared by all workers of this session
    logdir, result = root / 'atari_run', root / 'atari_run.json'
    with open(root / 'atari_run.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not result.exists():
            code, output, seconds = run_module('dreamerv2_tf.train', [
                *ATARI_TINY, '--logdir', str(logdir), '--steps', str(ATARI_RUN_STEPS)])
            result.write_text(json.dumps([code, output, seconds]))
    return (logdir, *json.loads(result.read_text()))
