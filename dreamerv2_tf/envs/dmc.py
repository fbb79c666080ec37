"""DeepMind Control from pixels (spec section 3.2), with the multi-word domains fixed.

Never import dm_control in a process that has TensorFlow: TF loads its library with RTLD_GLOBAL
and Mesa's renderer then segfaults, and merely importing dm_control's EGL backend next to TF makes
the process abort at exit. So this module imports dm_control only inside `DMC._load`, the task
catalogue below reads dm_control's source files instead of importing them, and `make_env` runs
DMC envs in a worker process of their own (stack-notes section 7).
"""

import ast
import functools
import importlib.util
import pathlib

import numpy as np

from dreamerv2_tf.envs.space import Space
from dreamerv2_tf.envs.wrappers import base_obs_space, flags

ALIASES = {'cup': 'ball_in_cup'}  # dmc_cup_catch, as in the paper's score files

# Camera per task when dmc_camera is -1 (spec 3.2): the quadruped is only visible from camera 2.
DEFAULT_CAMERAS = {
    'quadruped_walk': 2, 'quadruped_run': 2, 'quadruped_escape': 2, 'quadruped_fetch': 2,
    'locom_rodent_maze_forage': 1, 'locom_rodent_two_touch': 1,
}


@functools.lru_cache(maxsize=1)
def catalog():
    """{source: {domain: [tasks]}} for sources 'suite', 'manip' and 'locom', read from the
    installed dm_control's source without importing it (see the module docstring)."""
    spec = importlib.util.find_spec('dm_control')
    if spec is None or not spec.submodule_search_locations:
        return {}
    root = pathlib.Path(list(spec.submodule_search_locations)[0])
    suite = {}
    for path in sorted((root / 'suite').glob('*.py')):
        tasks = _decorated(path, 'SUITE')
        if tasks:
            suite[path.stem] = tasks
    manip = []
    for path in sorted((root / 'manipulation').glob('*.py')):
        manip += [name[:-len('_vision')] for name in _decorated(path, 'registry')
                  if name.endswith('_vision')]
    rodent = root / 'locomotion' / 'examples' / 'basic_rodent_2020.py'
    locom = [name for name in _functions(rodent) if name.startswith('rodent_')]
    return {'suite': suite, 'manip': {'manip': sorted(manip)}, 'locom': {'locom': locom}}


def _functions(path):
    try:
        tree = ast.parse(pathlib.Path(path).read_text())
    except (OSError, SyntaxError):
        return {}
    return {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}


def _decorated(path, registry):
    """Names of top-level functions decorated with `<registry>.add(...)`."""
    names = []
    for name, node in _functions(path).items():
        for decorator in node.decorator_list:
            target = decorator.func if isinstance(decorator, ast.Call) else decorator
            if (isinstance(target, ast.Attribute) and target.attr == 'add'
                    and isinstance(target.value, ast.Name) and target.value.id == registry):
                names.append(name)
    return names


def task_names():
    """Every valid `dmc_...` task name."""
    names = []
    for source, domains in catalog().items():
        for domain, tasks in domains.items():
            names += [f'{domain}_{task}' for task in tasks]
    return names


def resolve(name):
    """'walker_walk' -> ('suite', 'walker', 'walk'); handles multi-word domains such as
    point_mass_easy and ball_in_cup_catch (spec 17 item 19), 'cup' for ball_in_cup, and the
    'manip_' / 'locom_' prefixes. Returns None for unknown names."""
    domain_part, _, rest = name.partition('_')
    if domain_part in ALIASES:
        name = f'{ALIASES[domain_part]}_{rest}'
    tables = catalog()
    for source in ('manip', 'locom'):
        if domain_part == source:
            tasks = tables.get(source, {}).get(source, [])
            return (source, source, rest) if rest in tasks else None
    # Longest domain first so that a domain that prefixes another cannot steal its tasks.
    for domain in sorted(tables.get('suite', {}), key=len, reverse=True):
        if name.startswith(domain + '_'):
            task = name[len(domain) + 1:]
            if task in tables['suite'][domain]:
                return 'suite', domain, task
    return None


class DMC:
    """One dm_control task rendered to `size` pixels, with its observations as float32 vectors.

    `name` is the task part of `dmc_<domain>_<task>`. Scalar observations (walker's `height`)
    become vectors of size 1 so that the MLP encoder uses them (the original dropped them, spec 17
    item 19). `env` injects a ready dm_env environment (with a `physics`) instead of loading one.
    With `render=False` there is no `image` observation: rendering costs most of a step, and
    proprioceptive agents read no image."""

    def __init__(self, name, action_repeat=2, size=(64, 64), camera=-1, seed=None,
                 fast_render=False, env=None, render=True):
        self._name = name
        self._render = bool(render)
        self._repeat = int(action_repeat)
        if self._repeat < 1:
            raise ValueError(f'action_repeat must be at least 1, got {action_repeat}')
        self._size = tuple(int(x) for x in size)
        if camera is None or camera < 0:
            camera = DEFAULT_CAMERAS.get(name, 0)
        self._camera = int(camera)
        self._env = env if env is not None else self._load(name, seed)
        if fast_render:
            # Only takes effect before the first render; ~4x faster, no shadows or antialiasing.
            quality = self._env.physics.model.vis.quality
            quality.shadowsize = 0
            quality.offsamples = 0
        self._obs_keys = {}
        for key, spec in self._env.observation_spec().items():
            if 0 in spec.shape:
                continue  # empty observations carry nothing
            self._obs_keys[key] = _vector_space(key, spec)
        action_spec = self._env.action_spec()
        self._act_space = Space(np.float32, action_spec.shape, action_spec.minimum,
                                action_spec.maximum)

    @staticmethod
    def _load(name, seed):
        resolved = resolve(name)
        if resolved is None:
            raise ValueError(f"unknown DeepMind Control task '{name}'")
        source, domain, task = resolved
        if source == 'manip':
            from dm_control import manipulation
            return manipulation.load(f'{task}_vision', seed=seed)
        if source == 'locom':
            from dm_control.locomotion.examples import basic_rodent_2020
            return getattr(basic_rodent_2020, task)(random_state=seed)
        from dm_control import suite
        return suite.load(domain, task, task_kwargs={'random': seed})

    @property
    def obs_space(self):
        image = {'image': Space(np.uint8, self._size + (3,), 0, 255)} if self._render else {}
        return {
            **image,
            **{key: space for key, space in self._obs_keys.items()},
            **base_obs_space(),
        }

    @property
    def act_space(self):
        return {'action': self._act_space}

    def reset(self):
        time_step = self._env.reset()
        return self._obs(time_step, flags(is_first=True))

    def step(self, action):
        action = np.asarray(action['action'])
        if not np.all(np.isfinite(action)):
            raise ValueError(f'non-finite DMC action {action.tolist()}')
        reward = 0.0
        for _ in range(self._repeat):
            time_step = self._env.step(action)
            reward += time_step.reward or 0.0  # the first step of some tasks has no reward
            if time_step.last():
                break
        if time_step.discount not in (0, 1):
            raise ValueError(f'DMC discount {time_step.discount} is neither 0 nor 1')
        return self._obs(time_step, flags(reward, is_last=time_step.last(),
                                          is_terminal=time_step.discount == 0))

    def close(self):
        close = getattr(self._env, 'close', None)
        if close is not None:
            close()

    def _obs(self, time_step, obs):
        if self._render:
            obs['image'] = self._env.physics.render(*self._size, camera_id=self._camera)
        for key, space in self._obs_keys.items():
            obs[key] = np.asarray(time_step.observation[key]).astype(space.dtype).reshape(
                space.shape)
        return obs


def _vector_space(key, spec):
    shape = tuple(spec.shape) or (1,)
    dtype = np.dtype(spec.dtype)
    if dtype == np.uint8:
        return Space(np.uint8, shape, 0, 255)
    if dtype == bool:
        return Space(bool, shape)
    if np.issubdtype(dtype, np.floating):
        return Space(np.float32, shape)
    if np.issubdtype(dtype, np.integer):
        return Space(np.int32, shape)
    raise TypeError(f"DMC observation '{key}' has unsupported dtype {dtype}")
