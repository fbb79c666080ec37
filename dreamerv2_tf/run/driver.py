"""Driver (spec 5): steps a `BatchEnv` with a policy and hands every transition to callbacks.

A transition is the observation dict of one env merged with the action that led to it (zeros for
the reset observation), converted to the replay's dtypes. Envs whose last observation ended an
episode are reset on the next step instead of stepped; the policy sees `is_first` and resets its
own latent state. The policy state is kept across calls until `reset()`.

When every env ended, the policy is not asked for actions that would all be discarded: it only
sees observations it acts on, as in the original (which reset ended envs before calling the
policy). Besides saving a forward pass per episode, this keeps the agent's random numbers
independent of where a run was interrupted: a run resumed between episodes starts with a reset
and no pending observation, and draws what the uninterrupted run draws.
"""

import numpy as np

from dreamerv2_tf.run.replay import convert


class Driver:

    def __init__(self, env):
        self.env = env
        self._on_steps, self._on_resets, self._on_episodes = [], [], []
        self.reset()

    def on_step(self, callback):
        """callback(transition, worker) after every env step (not after resets)."""
        self._on_steps.append(callback)

    def on_reset(self, callback):
        """callback(transition, worker) for every reset observation."""
        self._on_resets.append(callback)

    def on_episode(self, callback):
        """callback(episode, worker) with the finished episode as a dict of stacked arrays."""
        self._on_episodes.append(callback)

    def reset(self):
        """Forget observations, unfinished episodes and the policy state: all envs reset next."""
        self._obs = None
        self._state = None
        self._episodes = [None] * len(self.env)

    def __call__(self, policy, steps=0, episodes=0):
        """Runs `policy(obs, state) -> ({'action': [N, A]}, state)` until at least `steps` env
        steps and `episodes` finished episodes (summed over envs) happened in this call."""
        step = episode = 0
        act_space = self.env.act_space
        count = len(self.env)
        while step < steps or episode < episodes:
            if self._obs is None or np.asarray(self._obs['is_last'], bool).all():
                reset = np.ones(count, bool)
                actions = {k: np.zeros((count,) + s.shape, s.dtype) for k, s in act_space.items()}
            else:
                outputs, self._state = policy(self._obs, self._state)
                actions = {k: np.asarray(outputs[k]) for k in act_space}
                reset = np.asarray(self._obs['is_last'], bool)  # ended envs reset instead
            obs = self.env.step(actions, reset)
            for i in range(count):
                transition = {k: convert(v[i]) for k, v in obs.items()}
                if reset[i]:
                    for key, space in act_space.items():
                        transition[key] = np.zeros(space.shape, space.dtype)
                    self._episodes[i] = [transition]
                    for callback in self._on_resets:
                        callback(transition, i)
                    continue
                transition.update({k: convert(v[i]) for k, v in actions.items()})
                if self._episodes[i] is not None:
                    self._episodes[i].append(transition)
                step += 1
                for callback in self._on_steps:
                    callback(transition, i)
                if transition['is_last']:
                    episode += 1
                    if self._episodes[i] is not None:
                        finished = {k: np.stack([t[k] for t in self._episodes[i]])
                                    for k in self._episodes[i][0]}
                        self._episodes[i] = None
                        for callback in self._on_episodes:
                            callback(finished, i)
            self._obs = obs


class RandomPolicy:
    """Uniform random actions (prefill): one-hot for discrete spaces, uniform in the bounds else."""

    def __init__(self, act_space, seed=None):
        self.act_space = act_space
        self.rng = np.random.RandomState(seed)

    def __call__(self, obs, state=None):
        count = len(obs['is_first'])
        return {k: np.stack([s.sample(self.rng) for _ in range(count)])
                for k, s in self.act_space.items()}, None
