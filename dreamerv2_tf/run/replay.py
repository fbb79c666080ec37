"""Episode replay: one compressed `.npz` per finished episode, sampled into fixed-length chunks.

Layout (spec section 4): `<directory>/<YYYYmmddTHHMMSS.ffffff>-<uuid hex>-<length>.npz`, where
`length` counts transitions (entries - 1; entry 0 is the reset observation) and the timestamp is UTC
with microseconds. Within one process stamps strictly increase and never go below the newest name
already in the directory, so sorting by name is write order even for episodes saved in the same
second. Names without the `.ffffff` part (the original DreamerV2 format) are read as well.

Files are written atomically (hidden temporary name, fsync, `os.replace`), so a crash leaves either
the whole episode or a `.tmp` file that the loader removes with a warning; a write that fails (a full
disk) removes its temporary file and raises. Loading never unpickles; unreadable, truncated and
foreign files are skipped with a warning.

Resuming: `newest` names the newest episode file; the training loop stores it in each checkpoint,
and on resume `set_aside_after(name, folder)` moves the episodes written after it (between the
checkpoint and a crash) to a side folder, so that the replay holds what it held at the checkpoint,
nothing is deleted, and a resumed run that collects the same episodes again never stores one twice.
A `Sampler`'s random state (`state()`, `set_state()`) is checkpointed the same way, so that a resumed
deterministic run samples the batches the uninterrupted run would have.

Differences from the original on purpose (spec section 17):
* bug 7: `total_steps` at start-up is the sum of the lengths in the filenames (no extra -1);
* bug 8: `clear_ongoing()` drops in-progress episodes, and a transition with `is_first` arriving
  while an episode is still open starts a new episode instead of being glued onto the old one;
* with `delete_evicted`, deleted names are appended to `evicted_episodes.txt` so totals (and hence
  the resumed step counter) still count them after a restart.

TensorFlow is imported only inside `Replay.dataset()`: environment worker processes and the file
helpers stay free of it.
"""

import collections
import datetime
import errno
import io
import json
import logging
import os
import pathlib
import re
import threading
import uuid

import numpy as np

from dreamerv2_tf.protocol import is_model_input

logger = logging.getLogger(__name__)

LEDGER = 'evicted_episodes.txt'  # names of episodes deleted by eviction, one per line
_NAME = re.compile(r'^(\d{8}T\d{6})(?:\.(\d{6}))?-([0-9a-f]{32})-(\d+)\.npz$')
_TMP_SUFFIX = '.tmp'

__all__ = ['Replay', 'Sampler', 'EpisodeFileError', 'convert', 'convert_episode', 'parse_filename',
           'save_episode', 'load_episode']


class EpisodeFileError(ValueError):
    """An episode file (or episode dict) that cannot be used: unreadable, foreign or ragged."""


# --------------------------------------------------------------------------------------------
# Conversion and file helpers.


def convert(value, copy=True):
    """`value` as a numpy array in storage dtype: float -> float32, signed int -> int32.

    uint8, bool and other dtypes are kept. Copies by default because drivers may reuse their
    observation buffers.
    """
    value = np.asarray(value)
    if value.dtype == object:
        raise TypeError('Replay cannot store object arrays (they would need pickle).')
    if np.issubdtype(value.dtype, np.floating):
        return value.astype(np.float32, copy=copy)
    if np.issubdtype(value.dtype, np.signedinteger):
        return value.astype(np.int32, copy=copy)
    return value.copy() if copy else value


def convert_episode(episode, copy=True):
    """Converted dict of arrays with a common leading dimension; checks the lengths."""
    if not episode:
        raise EpisodeFileError('episode has no keys')
    out = {}
    size = None
    for key, value in episode.items():
        value = convert(value, copy)
        if value.ndim == 0:
            raise EpisodeFileError(f"key '{key}' is a scalar, expected a leading time axis")
        if size is None:
            size = len(value)
        elif len(value) != size:
            raise EpisodeFileError(
                f"key '{key}' has {len(value)} entries, other keys have {size}")
        out[str(key)] = value
    if size < 1:
        raise EpisodeFileError('episode has no entries')
    return out


def episode_length(episode):
    """Number of transitions: entries minus the reset observation."""
    return len(next(iter(episode.values()))) - 1


class EpisodeName(collections.namedtuple('EpisodeName', 'order length')):
    """Parsed filename: `order` sorts by write time, `length` counts transitions."""


def parse_filename(name):
    """`EpisodeName` for an episode filename, or None if the name is not one."""
    match = _NAME.match(name)
    if not match:
        return None
    seconds, micros, hexid, length = match.groups()
    # Names without microseconds (original format) sort before any stamped name of that second.
    return EpisodeName((seconds, int(micros) if micros else -1, hexid), int(length))


class EpisodeClock:
    """Timestamps for episode names, strictly increasing within one replay folder: two saves in
    one microsecond, or a clock step backwards, still give names in write order."""

    def __init__(self):
        self._lock = threading.Lock()
        self._last = datetime.datetime.min

    def at_least(self, order):
        """Make every later stamp sort after `order` (an `EpisodeName.order`)."""
        seconds, micros, _ = order
        stamp = datetime.datetime.strptime(seconds, '%Y%m%dT%H%M%S').replace(
            microsecond=max(micros, 0))
        with self._lock:
            self._last = max(self._last, stamp)

    def next_stamp(self):
        now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        with self._lock:
            stamp = max(now, self._last + datetime.timedelta(microseconds=1))
            self._last = stamp
        return stamp.strftime('%Y%m%dT%H%M%S') + f'.{stamp.microsecond:06d}'


def _fsync_directory(directory):
    # Makes the rename itself durable across power loss; not all file systems allow it.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomic(path, data):
    """Write bytes to `path` so that readers see either nothing or the complete file."""
    path = pathlib.Path(path)
    tmp = path.with_name(f'.{path.name}.{os.getpid()}{_TMP_SUFFIX}')
    try:
        with open(tmp, 'xb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    _fsync_directory(path.parent)


def save_episode(directory, episode, clock=None):
    """Save a converted copy of `episode` under a fresh name in `directory`; returns the path.
    `clock` (an `EpisodeClock`) keeps the names of one folder in write order."""
    episode = convert_episode(episode)
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = f'{(clock or EpisodeClock()).next_stamp()}-{uuid.uuid4().hex}-{episode_length(episode)}.npz'
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **episode)
    path = directory / name
    try:
        _write_atomic(path, buffer.getbuffer())
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):  # name the file; the temp file is gone
            raise OSError(e.errno, os.strerror(e.errno), str(path)) from None
        raise
    return path


def load_episode(path):
    """Load one episode file into memory; raises `EpisodeFileError` for anything unusable."""
    path = pathlib.Path(path)
    parsed = parse_filename(path.name)
    try:
        npz = np.load(path, allow_pickle=False)
        if not hasattr(npz, 'files'):
            raise EpisodeFileError('a single .npy array, not an .npz archive')
        with npz:
            # Arrays are read lazily, so reading all of them here surfaces truncated members.
            episode = {key: npz[key] for key in npz.files}
    except EpisodeFileError:
        raise
    except Exception as e:  # zipfile, zlib, format and OS errors all mean "unusable file"
        raise EpisodeFileError(f'cannot read: {type(e).__name__}: {e}') from None
    episode = convert_episode(episode, copy=False)  # freshly read arrays need no second copy
    if parsed and episode_length(episode) != parsed.length:
        raise EpisodeFileError(
            f'holds {episode_length(episode)} transitions, name says {parsed.length}')
    for value in episode.values():
        value.flags.writeable = False  # sampled slices are views; nothing may write through them
    return episode


# --------------------------------------------------------------------------------------------
# Replay.


class _Loaded:
    __slots__ = ('data', 'length', 'nbytes', 'path')

    def __init__(self, data, path):
        self.data = data
        self.length = episode_length(data)
        self.nbytes = sum(value.nbytes for value in data.values())
        self.path = path


class Replay:
    """Episode store with capacity-bounded memory and a `tf.data` sampler (spec section 4).

    Thread safety: `add_step`, `add_episode`, `clear_ongoing` and sampling may run concurrently
    (the dataset generator runs in tf.data's threads while the driver adds steps).
    """

    def __init__(self, directory, capacity=None, minlen=1, maxlen=0, prioritize_ends=False,
                 ongoing=False, delete_evicted=False, seed=None, max_bytes=None):
        minlen, maxlen = int(minlen), int(maxlen or 0)
        if minlen < 1:
            raise ValueError(f'replay minlen must be >= 1, got {minlen}')
        if maxlen < 0 or (maxlen and maxlen < minlen):
            raise ValueError(f'replay maxlen must be 0 (no limit) or >= minlen, got {maxlen}')
        if capacity is not None and capacity < 0:
            raise ValueError(f'replay capacity must be >= 0, got {capacity}')
        self.directory = pathlib.Path(directory) if directory is not None else None
        # Config values are floats (2e6); 0 and None both mean unlimited, like maxlen 0.
        self.capacity = int(capacity) if capacity else None
        self.minlen = minlen
        self.maxlen = maxlen
        self.prioritize_ends = bool(prioritize_ends)
        self.ongoing = bool(ongoing)
        self.delete_evicted = bool(delete_evicted)
        # Memory budget in bytes besides `capacity` (0 and None: none); the oldest episodes go
        # first, as with capacity.
        self.max_bytes = int(max_bytes) if max_bytes else None
        self._estimated = False  # whether the memory estimate has been logged
        self._newest = None  # name of the newest episode file in the folder
        self._seeds = np.random.SeedSequence(seed)
        self._lock = threading.RLock()
        self._clock = EpisodeClock()
        self._loaded = []  # oldest first
        self._loaded_steps = 0
        self._loaded_bytes = 0
        self._total_steps = 0
        self._total_episodes = 0
        self._ongoing = collections.defaultdict(list)  # worker -> list of converted transitions
        self._discarding = set()  # workers whose headless transitions are being dropped
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._load_directory()
        self._log_loaded()

    def _log_loaded(self):
        if self._loaded:
            self._log_estimate(self._loaded[-1])
        where = self.directory if self.directory is not None else 'memory'
        logger.info('Replay %s: loaded %d steps in %d episodes (%.1f MiB); total %d steps in %d '
                    'episodes.', where, self._loaded_steps, len(self._loaded),
                    self._loaded_bytes / 2**20, self._total_steps, self._total_episodes)

    def _log_estimate(self, item):
        """Logs, once, what the replay will hold in memory when full, from an episode's size."""
        if self._estimated or item.length < 1:
            return
        self._estimated = True
        per_step = item.nbytes / (item.length + 1)
        parts = []
        if self.capacity:
            parts.append(f'capacity {self.capacity:,} steps = {self.capacity * per_step / 2**20:,.0f} MiB')
        if self.max_bytes:
            parts.append(f'byte budget (replay.max_bytes) {self.max_bytes / 2**20:,.0f} MiB')
        limit = ' and '.join(parts) if parts else 'no capacity limit'
        where = self.directory if self.directory is not None else 'memory'
        logger.info('Replay %s: %s bytes per step; %s.', where, f'{per_step:,.0f}', limit)

    @property
    def newest(self):
        """Name of the newest episode file written or found in the folder (None: none yet)."""
        with self._lock:
            return self._newest

    def set_aside_after(self, name, folder):
        """Moves the episode files newer than the episode `name` (None: all of them) to
        `folder` and reloads the replay from what stays; returns the number moved.

        For resuming: the files written after a checkpoint are set aside, so that the replay
        matches it. Files are moved, never deleted."""
        if self.directory is None:
            return 0
        if name and parse_filename(name) is None:
            logger.warning('Replay %s: %r is not an episode name; setting nothing aside.',
                           self.directory, name)
            return 0
        after = parse_filename(name).order if name else None
        moved = []
        for entry in sorted(os.scandir(self.directory), key=lambda e: e.name):
            parsed = parse_filename(entry.name)
            if parsed and (after is None or parsed.order > after):
                moved.append(entry.name)
        if not moved:
            return 0
        folder = pathlib.Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for file in moved:
            os.replace(self.directory / file, folder / file)
        _fsync_directory(self.directory)
        logger.warning('Replay %s: moved %d episode(s) written after the checkpoint to %s (the '
                       'replay holds what it held at the checkpoint).', self.directory,
                       len(moved), folder)
        with self._lock:
            self._loaded, self._loaded_steps, self._loaded_bytes = [], 0, 0
            self._total_steps = self._total_episodes = 0
            self._newest = None
            self._load_directory()
        self._log_loaded()
        return len(moved)

    # ---------------------------------------------------------------------------- start-up

    def _load_directory(self):
        names = {}
        ledger = set()
        for entry in os.scandir(self.directory):
            name = entry.name
            if name == LEDGER:
                ledger = self._read_ledger()
                continue
            parsed = parse_filename(name) if entry.is_file() else None
            if parsed:
                names[name] = parsed
            elif name.startswith('.') and name.endswith(_TMP_SUFFIX):
                # One process writes a folder, and it is only starting: this is a dead write.
                logger.warning('Replay: removing leftover temporary file %s from an interrupted '
                               'write.', entry.path)
                try:
                    os.unlink(entry.path)
                except OSError:
                    pass
            else:
                logger.warning('Replay: ignoring %s (not an episode file).', entry.path)
        # Totals count every episode ever written (fix of spec bug 7: filename lengths already
        # exclude the reset entry), including ones deleted by eviction.
        for name in ledger - names.keys():
            parsed = parse_filename(name)
            self._total_steps += parsed.length
            self._total_episodes += 1
        self._total_steps += sum(parsed.length for parsed in names.values())
        self._total_episodes += len(names)
        if names:
            self._clock.at_least(max(parsed.order for parsed in names.values()))
            self._newest = max(names, key=lambda n: names[n].order)
        if ledger:
            self._clock.at_least(max(parse_filename(name).order for name in ledger))
        # Newest first, stopping before the episode that would exceed capacity (the same set the
        # eviction rule would keep), so nothing is loaded only to be evicted right away.
        loaded = []
        steps = nbytes = 0
        for name in sorted(names, key=lambda n: names[n].order, reverse=True):
            length = names[name].length
            if self.capacity and loaded and steps + length > self.capacity:
                break
            if self.max_bytes and loaded and nbytes >= self.max_bytes:
                break
            if length < self.minlen:
                logger.info('Replay: not loading %s: %d transitions < minlen %d.', name, length,
                            self.minlen)
                continue
            path = self.directory / name
            try:
                episode = load_episode(path)
            except (EpisodeFileError, OSError) as e:
                logger.warning('Replay: skipping unreadable episode file %s (%s).', path,
                               str(e).replace('\n', ' '))
                continue
            if loaded and episode.keys() != loaded[0].data.keys():
                # Episodes are batched together, so all need the keys of the newest one.
                logger.warning('Replay: skipping episode file %s: its keys %s differ from those of '
                               'the newest episode %s.', path, sorted(episode),
                               sorted(loaded[0].data))
                continue
            item = _Loaded(episode, path)
            if self.max_bytes and loaded and nbytes + item.nbytes > self.max_bytes:
                break
            loaded.append(item)
            steps += length
            nbytes += item.nbytes
        for item in reversed(loaded):
            self._append(item)

    def _read_ledger(self):
        try:
            lines = (self.directory / LEDGER).read_text(errors='replace').split('\n')
        except OSError as e:
            logger.warning('Replay: cannot read %s (%s).', self.directory / LEDGER, e)
            return set()
        # A kill in the middle of an append leaves a partial last line; it does not parse.
        return {line for line in lines if parse_filename(line)}

    # ---------------------------------------------------------------------------- adding

    @property
    def stats(self):
        with self._lock:
            return {
                'total_steps': self._total_steps,
                'total_episodes': self._total_episodes,
                'loaded_steps': self._loaded_steps,
                'loaded_episodes': len(self._loaded),
                'loaded_bytes': self._loaded_bytes,
            }

    def add_step(self, transition, worker=0):
        """Append one transition to `worker`'s episode; `is_last` finishes (saves) the episode."""
        step = {str(key): convert(value) for key, value in transition.items()}
        is_first = bool(step['is_first']) if 'is_first' in step else None
        with self._lock:
            steps = self._ongoing[worker]
            if steps and is_first:
                # The env was reset while an episode was open (e.g. a driver reset after prefill):
                # the old episode is unfinished and must not be glued onto this one (spec bug 8).
                logger.info('Replay: dropping unfinished episode of %d steps of worker %s '
                            '(environment was reset).', len(steps) - 1, worker)
                steps.clear()
            if not steps and is_first is False:
                # Continuation of an episode whose start was dropped; storing it would create an
                # episode without its reset observation.
                if worker not in self._discarding:
                    self._discarding.add(worker)
                    logger.info('Replay: worker %s is mid-episode with no open episode; '
                                'dropping its steps until the next reset.', worker)
                return
            self._discarding.discard(worker)
            if steps:
                reference = steps[0]
                if step.keys() != reference.keys():
                    raise ValueError(
                        f'Replay: transition keys {sorted(step)} differ from the episode keys '
                        f'{sorted(reference)} (worker {worker}).')
                for key, value in step.items():
                    if value.shape != reference[key].shape:
                        raise ValueError(
                            f"Replay: '{key}' has shape {value.shape}, earlier steps of this "
                            f'episode have {reference[key].shape} (worker {worker}).')
            steps.append(step)
            if not bool(step.get('is_last', False)):
                return
            finished = list(steps)
            del self._ongoing[worker]
        episode = {key: np.stack([s[key] for s in finished]) for key in finished[0]}
        self._add(episode)

    def add_episode(self, episode):
        """Add (and save) a whole episode: dict of arrays with leading dimension length + 1.

        Returns the saved path, or None if the episode was too short or the replay is in memory.
        """
        return self._add(convert_episode(episode))

    def _add(self, episode):
        length = episode_length(episode)
        if length < self.minlen:
            logger.info('Replay: skipping short episode of length %d (minlen %d).', length,
                        self.minlen)
            return None
        path = None
        if self.directory is not None:
            # Compress and write outside the lock: sampling continues meanwhile.
            path = save_episode(self.directory, episode, self._clock)
        for value in episode.values():
            value.flags.writeable = False
        item = _Loaded(episode, path)
        with self._lock:
            self._total_steps += length
            self._total_episodes += 1
            self._append(item)
            self._evict()
            if path is not None:
                self._newest = path.name
        self._log_estimate(item)
        return path

    def _append(self, item):
        self._loaded.append(item)
        self._loaded_steps += item.length
        self._loaded_bytes += item.nbytes

    def _over_budget(self):
        return ((self.capacity and self._loaded_steps > self.capacity) or
                (self.max_bytes and self._loaded_bytes > self.max_bytes))

    def _evict(self):
        while len(self._loaded) > 1 and self._over_budget():
            item = self._loaded.pop(0)
            self._loaded_steps -= item.length
            self._loaded_bytes -= item.nbytes
            if self.delete_evicted and item.path is not None:
                self._delete(item.path)

    def _delete(self, path):
        # Record first, then delete: a kill in between leaves a file that is both listed and
        # present, which the start-up count handles (set union), never a lost count.
        with open(self.directory / LEDGER, 'a') as f:
            f.write(path.name + '\n')
            f.flush()
            os.fsync(f.fileno())
        try:
            path.unlink()
        except FileNotFoundError:
            pass

    def clear_ongoing(self, worker=None):
        """Drop in-progress episodes (of one worker, or all); returns the steps dropped."""
        with self._lock:
            workers = list(self._ongoing) if worker is None else [worker]
            dropped = 0
            for w in workers:
                steps = self._ongoing.pop(w, [])
                dropped += max(len(steps) - 1, 0)
            return dropped

    # ---------------------------------------------------------------------------- sampling

    def _candidates(self):
        # Caller holds the lock. Ongoing episodes are lists of per-step dicts.
        ongoing = []
        if self.ongoing:
            ongoing = [s for s in self._ongoing.values() if len(s) - 1 >= self.minlen]
        return self._loaded, ongoing

    def _empty_message(self):
        where = self.directory if self.directory is not None else 'in memory'
        extra = ' or ongoing' if self.ongoing else ''
        return (f'Replay {where} has no complete{extra} episode with at least {self.minlen} '
                f'transitions to sample from; collect data (prefill) first.')

    def sample_sequence(self, rng):
        """One sequence per spec 4.3, as a dict of arrays without `log_*` keys.

        `is_first` is True only at position 0 (added if the episodes lack it).
        """
        with self._lock:
            loaded, ongoing = self._candidates()
            count = len(loaded) + len(ongoing)
            if not count:
                raise RuntimeError(self._empty_message())
            choice = int(rng.integers(count))  # uniform over episodes, not steps (spec bug 18)
            if choice < len(loaded):
                source, steps = loaded[choice].data, None
                total = loaded[choice].length + 1
            else:
                source, steps = None, ongoing[choice - len(loaded)]
                total = len(steps)
            length = min(total, self.maxlen) if self.maxlen else total
            length -= int(rng.integers(0, self.minlen))
            length = max(self.minlen, length)
            upper = total - length + 1
            if self.prioritize_ends:
                upper += self.minlen  # the extra mass all lands on the final window below
            index = min(int(rng.integers(0, upper)), total - length)
            if steps is None:
                # Views: loaded arrays are read-only and outlive eviction through these refs.
                sequence = {k: v[index:index + length] for k, v in source.items()
                            if is_model_input(k)}
            else:
                window = steps[index:index + length]  # shallow copy; steps are never mutated
        if steps is not None:
            sequence = {k: np.stack([s[k] for s in window]) for k in window[0]
                        if is_model_input(k)}
        is_first = np.zeros(length, bool)
        is_first[0] = True
        sequence['is_first'] = is_first
        return sequence

    def chunks(self, length, rng=None):
        """Endless iterator of chunks of exactly `length` steps (spec 4.4), a `Sampler`.

        A chunk continues the current sequence and, once it is used up, starts a newly sampled
        one (marked by `is_first`), so no sampled step is wasted. `rng` defaults to a fresh
        stream spawned from the replay's seed.
        """
        if rng is None:
            rng = np.random.default_rng(self._seeds.spawn(1)[0])
        return Sampler(self, length, rng)

    def sampler(self, length, state=None):
        """A `Sampler` on a fresh random stream spawned from the replay's seed, or continuing
        from `state` (a string from `Sampler.state()`)."""
        sampler = self.chunks(length)
        if state:
            sampler.set_state(state)
        return sampler

    def _signature(self):
        """{key: (dtype, shape without time)} of sampled sequences, from the first candidate."""
        with self._lock:
            loaded, ongoing = self._candidates()
            if loaded:
                items = [(k, v.dtype, v.shape[1:]) for k, v in loaded[0].data.items()]
            elif ongoing:
                items = [(k, v.dtype, v.shape) for k, v in ongoing[0][0].items()]
            else:
                raise ValueError(self._empty_message())
        spec = {k: (dtype, shape) for k, dtype, shape in items if is_model_input(k)}
        spec['is_first'] = (np.dtype(bool), ())
        return spec

    def dataset(self, batch, length, prefetch=5, sampler=None):
        """`tf.data.Dataset` of dicts of `[batch, length, ...]` tensors, prefetched.

        `sampler` (from `sampler()`) lets the caller save and restore the random state; by
        default each call gets its own new one.

        `prefetch=0` samples each batch when it is requested, so batches do not depend on the
        timing of episodes added meanwhile (deterministic runs need that).

        Raises ValueError if the replay has nothing to sample yet. Each call gets its own random
        stream spawned from `seed`, so a fixed seed and call order reproduce the batches (as long
        as the replay contents are the same when sampled).
        """
        spec = self._signature()  # first, so an empty replay fails before importing TF
        import tensorflow as tf  # kept out of module import: env workers and tools need no TF

        signature = {k: tf.TensorSpec((int(length),) + tuple(shape), tf.as_dtype(dtype))
                     for k, (dtype, shape) in spec.items()}
        if sampler is None:
            sampler = self.chunks(length)
        elif sampler.length != int(length):
            raise ValueError(f'sampler makes chunks of {sampler.length} steps, not {length}')
        generator = lambda: sampler  # noqa: E731 (tf.data wants a callable)
        dataset = tf.data.Dataset.from_generator(generator, output_signature=signature)
        dataset = dataset.batch(int(batch), drop_remainder=True)
        if prefetch:
            return dataset.prefetch(prefetch)
        # tf.data would otherwise add a prefetch of its own, which samples ahead: the sampler's
        # state (checkpointed) must be that of the batches handed out.
        options = tf.data.Options()
        options.experimental_optimization.inject_prefetch = False
        return dataset.with_options(options)



class Sampler:
    """Endless chunks of `length` steps sampled from a replay (see `Replay.chunks`), with a random
    state that can be saved and restored.

    The state is the random generator's state from just before the current sequence was sampled,
    plus the position reached in it: restoring it samples that sequence again (the same draws on
    the same replay contents) and continues at the same step.
    """

    def __init__(self, replay, length, rng):
        length = int(length)
        if length < 1:
            raise ValueError(f'chunk length must be >= 1, got {length}')
        self.replay, self.length, self.rng = replay, length, rng
        self._lock = threading.Lock()
        self._sequence, self._position, self._size, self._keys = None, 0, 0, None
        self._start = None  # generator state before the current sequence was sampled
        self._resample_to = None  # position to restore after `set_state`

    def __iter__(self):
        return self

    def state(self):
        """JSON text of the random state and position (what `set_state` takes)."""
        with self._lock:
            if self._resample_to is not None:
                start, position = self._start, self._resample_to
            elif self._sequence is not None and self._position < self._size:
                start, position = self._start, self._position
            else:
                start, position = self.rng.bit_generator.state, 0
        return json.dumps({'rng': start, 'position': position, 'length': self.length})

    def set_state(self, text):
        """Continues from a state saved by `state()`; the sequence itself is sampled again on
        the next chunk (so the replay must hold what it held then)."""
        try:
            state = json.loads(text)
            rng_state, position = state['rng'], int(state['position'])
            if int(state['length']) != self.length:
                raise ValueError(f"saved for chunks of {state['length']} steps, not {self.length}")
            with self._lock:
                self.rng.bit_generator.state = rng_state
                self._start = rng_state
                self._sequence, self._position, self._size = None, 0, 0
                self._resample_to = position if position else None
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f'unusable sampler state: {e}') from None

    def _next_sequence(self):
        self._start = self.rng.bit_generator.state
        sequence = self.replay.sample_sequence(self.rng)
        if self._keys is None:
            self._keys = sequence.keys()
        elif sequence.keys() != self._keys:
            raise ValueError(f'Replay episodes have different keys: {sorted(sequence)} vs '
                             f'{sorted(self._keys)}; cannot batch them together.')
        self._sequence, self._position = sequence, 0
        self._size = len(sequence['is_first'])

    def __next__(self):
        with self._lock:
            if self._resample_to is not None:
                self.rng.bit_generator.state = self._start
                self._next_sequence()
                self._position = min(self._resample_to, self._size)
                self._resample_to = None
            parts = []
            needed = self.length
            while needed:
                if self._sequence is None or self._position >= self._size:
                    self._next_sequence()
                take = min(needed, self._size - self._position)
                parts.append({k: v[self._position:self._position + take]
                              for k, v in self._sequence.items()})
                self._position += take
                needed -= take
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([p[k] for p in parts]) for k in self._keys}
