"""Task names to fully wrapped environments: `parse_task`, `make_env`, `make_batch_env`.

Task names are `<suite>_<rest>`: `atari_<game>` (snake_case, the ALE ROM name; all 55 games of
the paper's curves), `dmc_<domain>_<task>`, `crafter_reward` / `crafter_noreward` and
`gym_<registered gymnasium id>` (`gym_module:Id` imports `module` first, as gymnasium.make does).
"""

import dataclasses
import difflib
import functools
import importlib
import pathlib
import re

from dreamerv2_tf.envs import wrappers
from dreamerv2_tf.envs.batch import BatchEnv
from dreamerv2_tf.envs.worker import ProcessEnv, in_env_worker

SUITES = ('atari_<game>', 'dmc_<domain>_<task>', 'crafter_reward', 'crafter_noreward', 'gym_<id>')

# The 55 games of the paper's Atari curves (scores/atari-dreamerv2.json), by task name.
PAPER_ATARI_GAMES = (
    'alien', 'amidar', 'assault', 'asterix', 'asteroids', 'atlantis', 'bank_heist', 'battle_zone',
    'beam_rider', 'berzerk', 'bowling', 'boxing', 'breakout', 'centipede', 'chopper_command',
    'crazy_climber', 'demon_attack', 'double_dunk', 'enduro', 'fishing_derby', 'freeway',
    'frostbite', 'gopher', 'gravitar', 'hero', 'ice_hockey', 'james_bond', 'kangaroo', 'krull',
    'kung_fu_master', 'montezuma_revenge', 'ms_pacman', 'name_this_game', 'phoenix', 'pitfall',
    'pong', 'private_eye', 'qbert', 'riverraid', 'road_runner', 'robotank', 'seaquest', 'skiing',
    'solaris', 'space_invaders', 'star_gunner', 'tennis', 'time_pilot', 'tutankham', 'up_n_down',
    'venture', 'video_pinball', 'wizard_of_wor', 'yars_revenge', 'zaxxon',
)
# Task names whose ALE ROM is spelled differently.
ATARI_ROM_NAMES = {'james_bond': 'jamesbond'}

# The paper's Atari protocol (spec 3.3); the frame skip is the config's action_repeat.
ATARI_STICKY = 0.25
ATARI_NOOPS = 30


class UnknownTaskError(ValueError):
    """A task name that names no environment; the message is one line for the user."""


@dataclasses.dataclass(frozen=True)
class Task:
    """A parsed task name. `name` is suite-specific: the ALE ROM for atari, `<domain>_<task>` for
    dmc (with `domain`, `task` and `source` of suite/manip/locom filled in), reward or noreward
    for crafter, the gymnasium id for gym."""
    full: str
    suite: str
    name: str
    domain: str = None
    task: str = None
    source: str = None


def _closest(word, candidates, n=3):
    return difflib.get_close_matches(word, list(candidates), n=n, cutoff=0.5)


def _unknown(kind, full, candidates):
    close = _closest(full, candidates)
    hint = f" (closest: {', '.join(close)})" if close else ''
    return UnknownTaskError(f"unknown {kind} '{full}'{hint}; suites: {', '.join(SUITES)}")


def atari_task_names():
    """Every `atari_<game>` name with a ROM bundled in ale-py (the paper's 55 among them)."""
    from ale_py import roms
    renamed = {rom: task for task, rom in ATARI_ROM_NAMES.items()}
    return sorted(f'atari_{renamed.get(rom, rom)}' for rom in roms.get_all_rom_ids())


def parse_task(name):
    """Validates a task name and returns its `Task`; raises `UnknownTaskError` (a ValueError) with
    a one-line message listing the suites and the closest valid names."""
    name = str(name)
    suite, _, rest = name.partition('_')
    if suite == 'atari':
        rom = ATARI_ROM_NAMES.get(rest, rest)
        from ale_py import roms
        if rom not in roms.get_all_rom_ids():
            raise _unknown('Atari game', name, atari_task_names())
        return Task(name, 'atari', rom)
    if suite == 'dmc':
        from dreamerv2_tf.envs import dmc
        resolved = dmc.resolve(rest)
        if resolved is None:
            raise _unknown('DeepMind Control task', name, [f'dmc_{n}' for n in dmc.task_names()])
        source, domain, task = resolved
        return Task(name, 'dmc', rest, domain=domain, task=task, source=source)
    if suite == 'crafter':
        if rest not in ('reward', 'noreward'):
            raise _unknown('Crafter task', name, ['crafter_reward', 'crafter_noreward'])
        return Task(name, 'crafter', rest)
    if suite == 'gym':
        registry = _gym_registry(rest, name)
        if rest not in registry:
            raise _unknown('Gymnasium id', name, [f'gym_{key}' for key in registry])
        return Task(name, 'gym', rest)
    examples = ['atari_pong', 'dmc_walker_walk', 'crafter_reward', 'gym_CartPole-v1']
    raise _unknown('task', name, examples + [f'{s}_{rest}' for s in ('atari', 'dmc', 'gym')])


def _gym_registry(gym_id, full):
    import gymnasium
    try:
        import ale_py
        gymnasium.register_envs(ale_py)  # ALE/... ids, offline: ale-py bundles its ROMs
    except ImportError:
        pass
    module = gym_id.rpartition(':')[0]
    if module:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise UnknownTaskError(
                f"task '{full}': cannot import module '{module}' ({e})") from None
        return {f'{module}:{key}' for key in gymnasium.registry} | set(gymnasium.registry)
    return set(gymnasium.registry)


# Construction -------------------------------------------------------------------------------------

def check_installed(task):
    """Fails early, with an install hint, when the suite's optional package is missing."""
    if task.suite == 'crafter':
        from dreamerv2_tf.envs.crafter_env import import_crafter
        import_crafter()
    return task


def _as_config(config):
    from dreamerv2_tf.config import Config, defaults
    if isinstance(config, Config):
        return config
    return defaults().update(dict(config))  # a plain (nested) dict of overrides


def env_seed(config, mode, index):
    """Train env i gets seed + i; eval envs are offset by 10000 so their episodes differ."""
    if mode not in ('train', 'eval'):
        raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
    return int(config.seed) + (10000 if mode == 'eval' else 0) + int(index)


def needs_image(config, mode):
    """Whether a DMC env must render: a network reads `image` (the patterns match like the
    encoder's key selection), or, for evaluation, the policy video shows it."""
    read = any(re.match(pattern, 'image')
               for pattern in (config.encoder.cnn_keys, config.decoder.cnn_keys))
    return read or (mode == 'eval' and 'image' in config.log_keys_video)


def make_env(config, mode='train', index=0):
    """The env `config.task` names, fully wrapped (one-hot or normalised actions, time limit).

    `config` is a `Config` or a plain dict of overrides of the defaults. DMC envs are returned as a
    `ProcessEnv` running in a worker process unless this already is an env worker: MuJoCo's
    software renderer crashes in a process that loads TensorFlow before or after it."""
    config = _as_config(config)
    task = check_installed(parse_task(config.task))
    seed = env_seed(config, mode, index)
    if task.suite == 'dmc' and not in_env_worker():
        return ProcessEnv(functools.partial(make_env, config, mode, index),
                          name=f'{config.task} {mode} env {index}')
    size = tuple(config.render_size)
    if task.suite == 'atari':
        from dreamerv2_tf.envs.atari import Atari
        env = Atari(task.name, config.action_repeat, size, config.atari_grayscale,
                    noops=ATARI_NOOPS, sticky=ATARI_STICKY, seed=seed)
        env = wrappers.OneHotAction(env)
    elif task.suite == 'dmc':
        from dreamerv2_tf.envs.dmc import DMC
        env = DMC(task.name, config.action_repeat, size, config.dmc_camera, seed=seed,
                  fast_render=config.dmc_fast_render, render=needs_image(config, mode))
        env = wrappers.NormalizeAction(env)
    elif task.suite == 'crafter':
        from dreamerv2_tf.envs.crafter_env import Crafter
        if config.action_repeat != 1:
            raise ValueError(f'crafter needs action_repeat 1, got {config.action_repeat}')
        outdir = None
        if mode == 'train':
            outdir = pathlib.Path(config.logdir or f'runs/{config.task}').expanduser() / 'crafter'
        reward = task.name == 'reward' or mode == 'eval'  # evaluation always scores the reward
        env = Crafter(reward, size, outdir=outdir, seed=seed)
        env = wrappers.OneHotAction(env)
    else:
        env = make_gym_env(task.name, size, config.action_repeat, seed)
    return wrappers.TimeLimit(env, config.time_limit)


def make_gym_env(gym_id, size=(64, 64), action_repeat=1, seed=None, **kwargs):
    """A registered gymnasium env in the protocol (see `wrap_gym_env`); `kwargs` go to
    `gymnasium.make`."""
    import gymnasium
    _gym_registry(gym_id, f'gym_{gym_id}')  # registers ALE ids, imports `module:` prefixes
    return wrap_gym_env(gymnasium.make(gym_id, **kwargs), size, action_repeat, seed)


def wrap_gym_env(env, size=(64, 64), action_repeat=1, seed=None):
    """A gymnasium env instance in the protocol: images resized to `size`, discrete actions
    one-hot, bounded continuous actions in [-1, 1], actions repeated `action_repeat` times."""
    from dreamerv2_tf.envs.gym_env import GymWrapper
    env = GymWrapper(env, seed=seed)
    if any(len(s.shape) == 3 and s.dtype == 'uint8' for s in env.obs_space.values()):
        env = wrappers.ResizeImage(env, size)
    for key, space in env.act_space.items():
        if space.shape == () and space.dtype.kind in 'iu':
            env = wrappers.OneHotAction(env, key)
        elif space.dtype.kind == 'f':
            env = wrappers.NormalizeAction(env, key)
    if action_repeat > 1:
        env = wrappers.ActionRepeat(env, action_repeat)
    return env


def make_batch_env(config, mode='train', count=None):
    """`count` (default `config.envs`) envs of `config.task` in a `BatchEnv` run as
    `config.envs_parallel` says; env i is seeded like `make_env(config, mode, i)`."""
    config = _as_config(config)
    check_installed(parse_task(config.task))  # a bad name fails here, once, not in every worker
    count = int(config.envs if count is None else count)
    if count < 1:
        raise ValueError(f'need at least one env, got {count}')
    constructors = [functools.partial(make_env, config, mode, index) for index in range(count)]
    return BatchEnv(constructors, config.envs_parallel)
