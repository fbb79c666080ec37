"""Crafter (spec section 3.4), an optional extra: `pip install .[crafter]`."""

import numpy as np

from dreamerv2_tf.envs.space import Space
from dreamerv2_tf.envs.wrappers import base_obs_space, flags

INSTALL_HINT = ("Crafter is not installed; install it with: pip install 'dreamerv2_tf[crafter]' "
                '(or pip install crafter)')


class CrafterNotInstalledError(ImportError):
    pass


def import_crafter():
    try:
        import crafter
    except ImportError as e:
        raise CrafterNotInstalledError(INSTALL_HINT) from e
    return crafter


class Crafter:
    """`reward=False` trains without the task reward; `log_reward` always has the true one, and
    `log_achievement_<name>` counts each achievement within the episode. With `outdir`, crafter's
    recorder appends per-episode achievement stats to `<outdir>/stats.jsonl`. Episodes end on
    death (terminal) or after `length` steps (a cut), crafter's own rules."""

    def __init__(self, reward=True, size=(64, 64), outdir=None, seed=None, length=10000):
        crafter = import_crafter()
        self._env = crafter.Env(size=tuple(int(x) for x in size), reward=bool(reward),
                                length=length, seed=seed)
        if outdir:
            self._env = crafter.Recorder(self._env, str(outdir), save_stats=True,
                                         save_video=False, save_episode=False)
        self._achievements = list(crafter.constants.achievements)
        self._size = tuple(int(x) for x in size)
        self._n_actions = int(self._env.action_space.n)

    @property
    def obs_space(self):
        spaces = {
            'image': Space(np.uint8, self._size + (3,), 0, 255),
            **base_obs_space(),
            'log_reward': Space(np.float32),
        }
        spaces.update({f'log_achievement_{name}': Space(np.int32, (), 0)
                       for name in self._achievements})
        return spaces

    @property
    def act_space(self):
        return {'action': Space(np.int32, (), 0, self._n_actions - 1)}

    def reset(self):
        image = self._env.reset()
        obs = {'image': np.asarray(image, np.uint8), **flags(is_first=True),
               'log_reward': np.float32(0)}
        obs.update({f'log_achievement_{name}': np.int32(0) for name in self._achievements})
        return obs

    def step(self, action):
        image, reward, done, info = self._env.step(int(action['action']))
        # Dying ends with discount 0; reaching crafter's length limit is only a cut.
        obs = {'image': np.asarray(image, np.uint8),
               **flags(reward, is_last=done, is_terminal=info['discount'] == 0),
               'log_reward': np.float32(info['reward'])}
        obs.update({f'log_achievement_{name}': np.int32(info['achievements'][name])
                    for name in self._achievements})
        return obs

    def close(self):
        pass
