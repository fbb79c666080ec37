"""Checkpoints of everything a resumed run needs, with `tf.train.CheckpointManager`.

Saved: every network variable keyed by its Keras path (`world_model/...` style names, stable
across processes), every optimizer (Adam moments, iteration count, loss scale), the slow critic,
the agent's step and update counters, normaliser state, the agent's RNG state, and the training
loop's counters (numbers, strings such as the replay samplers' random states, and the RSSM state
carried between train batches). Keras 3 keeps
sublayers held in lists and dicts out of TensorFlow's object graph, so variables are listed
explicitly instead of tracked through the networks.

TensorFlow writes a checkpoint's files before it updates the `checkpoint` index, so a crash while
saving leaves the previous checkpoint as the latest one. A latest checkpoint that cannot be read
(truncated or corrupt files, an unreadable index) is skipped with one warning, and the previous
one is restored instead. A save that fails (a full disk) removes what it left half-written.
Counters missing from a checkpoint (written by an older version) keep their current values.
"""

import errno
import logging
import pathlib
import re
import shutil

import tensorflow as tf

log = logging.getLogger(__name__)

_NUMBERED = re.compile(r'^ckpt-(\d+)\.index$')


def is_disk_full(error):
    """Whether `error` (an OSError or a TensorFlow error) says the disk or quota is full."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(error, tf.errors.OpError) and 'No space left on device' in str(error)


class DiskFullError(OSError):
    """Writing failed because the disk is full; the message is one line for the user."""

    def __init__(self, what, error):
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        super().__init__(errno.ENOSPC, f'no space left on the device while writing {what} '
                         f'({detail[-160:]})')


class CheckpointUnreadable(ValueError):
    """No checkpoint in the directory can be read."""


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
        self._trackables = agent_trackables(agent)
        self._counters = dict(counters or {})
        self._checkpoint = tf.train.Checkpoint(**self._trackables, counters=self._counters)
        try:
            self._manager = tf.train.CheckpointManager(self._checkpoint, str(self.directory),
                                                       max_to_keep=max_to_keep)
        except Exception as e:  # noqa: BLE001 - a damaged index file raises parser errors
            index = self.directory / 'checkpoint'
            log.warning(f'Warning: the checkpoint index {index} is unreadable '
                        f'({_first_line(e)}); moved it to {index.name}.unreadable and looking '
                        f'for checkpoint files instead.')
            index.replace(index.with_name('checkpoint.unreadable'))
            self._manager = tf.train.CheckpointManager(self._checkpoint, str(self.directory),
                                                       max_to_keep=max_to_keep)
        self._remove_temporaries()

    @property
    def latest(self):
        return self._manager.latest_checkpoint

    def candidates(self):
        """Checkpoint paths to try on restore, newest first: those of the index, or the files
        found when the index lists none."""
        listed = list(reversed(self._manager.checkpoints))
        if listed:
            return listed
        numbers = []
        if self.directory.is_dir():
            numbers = [int(m.group(1)) for p in self.directory.iterdir()
                       if (m := _NUMBERED.match(p.name))]
        return [str(self.directory / f'ckpt-{n}') for n in sorted(numbers, reverse=True)]

    def save(self):
        """Writes a new checkpoint and returns its path. On a full disk, removes the files the
        failed save left behind and raises `DiskFullError`."""
        try:
            return self._manager.save()
        except (OSError, tf.errors.OpError) as e:
            self._remove_temporaries()
            if is_disk_full(e):
                raise DiskFullError(f'a checkpoint to {self.directory}', e) from None
            raise

    def _remove_temporaries(self):
        # TensorFlow writes a checkpoint's data under `<prefix>_temp/` and its index as
        # `checkpoint.tmp<random>`; after a failed save or a kill these stay behind.
        if not self.directory.is_dir():
            return
        for path in self.directory.iterdir():
            if path.is_dir() and path.name.endswith('_temp'):
                shutil.rmtree(path, ignore_errors=True)
            elif path.name.startswith('checkpoint.tmp'):
                path.unlink(missing_ok=True)

    def restore(self, path=None):
        """Restores `path`, else the latest readable checkpoint; returns its path, or None if
        there is none.

        An unreadable latest checkpoint is skipped with a warning and the previous one restored
        (`CheckpointUnreadable` when none can be read). Fails with a clear error when a checkpoint
        does not match the agent (for example after changing a network size on resume)."""
        candidates = [path] if path else self.candidates()
        if not candidates:
            return None
        problems = []
        for candidate in candidates:
            try:
                keys = _read_all(candidate)
            except Exception as e:  # noqa: BLE001 - truncated files raise IndexError, OpError...
                problems.append(f'{pathlib.Path(candidate).name}: {_first_line(e)}')
                if candidate != candidates[-1]:
                    log.warning(f'Warning: checkpoint {candidate} is unreadable '
                                f'({_first_line(e)}); falling back to the previous one.')
                continue
            self._restore(candidate, keys)
            return candidate
        raise CheckpointUnreadable(f'no readable checkpoint in {self.directory} '
                                   f"({'; '.join(problems)})")

    def _restore(self, path, keys):
        # Counters the checkpoint lacks are left out, so that their current values stay.
        counters = {name: var for name, var in self._counters.items()
                    if f'counters/{name}/.ATTRIBUTES/VARIABLE_VALUE' in keys}
        missing = sorted(self._counters.keys() - counters.keys())
        if missing:
            log.info(f'Checkpoint {path} has no {", ".join(missing)} (an older version wrote '
                     f'it); keeping their initial values.')
        status = tf.train.Checkpoint(**self._trackables, counters=counters).restore(path)
        try:
            status.assert_existing_objects_matched()
        except AssertionError as e:
            raise ValueError(f'checkpoint {path} does not match this agent (did the config '
                             f'change a network or the task?): {str(e).splitlines()[0]}') from None
        # The next save continues the numbering from the restored one (after a fall-back it
        # overwrites the unreadable checkpoint instead of pushing the good one out).
        number = re.search(r'-(\d+)$', str(path))
        if number:
            self._checkpoint.save_counter.assign(int(number.group(1)))


def _read_all(path):
    """Reads every tensor of the checkpoint at `path` (so truncated or corrupt files fail here,
    before any variable is assigned); returns the set of its keys."""
    reader = tf.train.load_checkpoint(path)
    keys = set(reader.get_variable_to_shape_map())
    for key in keys:
        reader.get_tensor(key)
    return keys


def _first_line(error):
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:200]
