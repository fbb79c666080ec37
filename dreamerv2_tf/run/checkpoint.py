"""Checkpoints of everything a resumed run needs, with `tf.train.CheckpointManager`.

Saved: every network variable keyed by its Keras path (`world_model/...` style names, stable
across processes), every optimizer (Adam moments, iteration count, loss scale), the slow critic,
the agent's step and update counters, normaliser state, the agent's RNG state, and the training
loop's counters. Keras 3 keeps sublayers held in lists and dicts out of TensorFlow's object graph,
so variables are listed explicitly instead of tracked through the networks.

TensorFlow writes a checkpoint's files before it updates the `checkpoint` index, so a crash while
saving leaves the previous checkpoint as the latest one.
"""

import pathlib

import tensorflow as tf


def agent_trackables(agent):
    """{name: trackable} of all state of `agent`."""
    variables = {}
    for net in agent.networks:
        for var in net.variables:
            if var.path in variables:
                raise ValueError(f"two variables share the path '{var.path}'")
            variables[var.path] = var
    return {
        'variables': variables,
        'optimizers': {opt.name: opt.opt for opt in agent.optimizers},
        'state': {var.name.split(':')[0]: var for var in agent.state_variables},
        'rng': agent.rng,
    }


class Checkpoint:
    """Saves and restores an agent plus named counters (`tf.Variable`s) under `directory`."""

    def __init__(self, directory, agent, counters=None, max_to_keep=2):
        self.directory = pathlib.Path(directory)
        self._checkpoint = tf.train.Checkpoint(**agent_trackables(agent),
                                               counters=dict(counters or {}))
        self._manager = tf.train.CheckpointManager(self._checkpoint, str(self.directory),
                                                   max_to_keep=max_to_keep)

    @property
    def latest(self):
        return self._manager.latest_checkpoint

    def save(self):
        return self._manager.save()

    def restore(self, path=None):
        """Restores `path` or the latest checkpoint; returns its path, or None if there is none.

        Fails with a clear error when the checkpoint does not match the agent (for example after
        changing a network size on resume)."""
        path = path or self.latest
        if path is None:
            return None
        status = self._checkpoint.restore(path)
        try:
            status.assert_existing_objects_matched()
        except AssertionError as e:
            raise ValueError(f'checkpoint {path} does not match this agent (did the config '
                             f'change a network or the task?): {str(e).splitlines()[0]}') from None
        return path
