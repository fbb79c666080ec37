"""Environments in one observation protocol (spec section 3).

`make_env(config, mode, index)` builds the env that `config.task` names; `make_batch_env` builds
`config.envs` of them in a `BatchEnv`. For your own environment, wrap a gymnasium env in
`GymWrapper`, then `OneHotAction` (discrete) or `NormalizeAction` (continuous), optionally
`ResizeImage`, and `TimeLimit`.

Nothing here imports TensorFlow (env worker processes rely on that); the suites' libraries load
only when an env of theirs is made. `python -m dreamerv2_tf.envs TASK` checks an env from the
command line.
"""

from dreamerv2_tf.envs.batch import BatchEnv
from dreamerv2_tf.envs.gym_env import GymWrapper
from dreamerv2_tf.envs.space import Space
from dreamerv2_tf.envs.tasks import (
    PAPER_ATARI_GAMES, Task, UnknownTaskError, make_batch_env, make_env, make_gym_env, parse_task,
    wrap_gym_env)
from dreamerv2_tf.envs.worker import EnvWorkerError, ProcessEnv
from dreamerv2_tf.envs.wrappers import (
    ActionRepeat, NormalizeAction, OneHotAction, ResizeImage, TimeLimit, Wrapper)

__all__ = [
    'make_env', 'make_batch_env', 'make_gym_env', 'wrap_gym_env', 'parse_task', 'Task',
    'UnknownTaskError',
    'BatchEnv', 'ProcessEnv', 'EnvWorkerError', 'GymWrapper', 'Space', 'Wrapper', 'OneHotAction',
    'NormalizeAction', 'ResizeImage', 'TimeLimit', 'ActionRepeat', 'PAPER_ATARI_GAMES',
]
