"""Tests for dreamerv2_tf.run.replay: files, start-up, capacity, sampling, chunking, tf.data, crashes."""

import logging
import os
import pathlib
import random
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import zipfile

import numpy as np
import pytest

from dreamerv2_tf.run.replay import (Replay, convert_episode, load_episode, parse_filename,
                                     save_episode)

NAME = re.compile(r'^\d{8}T\d{6}\.\d{6}-[0-9a-f]{32}-(\d+)\.npz$')


def make_episode(length, ep_id=0, seed=0):
    """Episode with `length` transitions in the dtypes a driver might hand over (64-bit numbers)."""
    rng = np.random.default_rng(seed)
    entries = length + 1
    flags = np.zeros(entries, bool)
    is_first, is_last = flags.copy(), flags.copy()
    is_first[0] = True
    is_last[-1] = True
    return {
        'image': rng.integers(0, 256, (entries, 4, 4, 1), dtype=np.uint8),
        'reward': rng.normal(size=entries),  # float64
        'action': rng.normal(size=(entries, 2)),  # float64
        'step': np.arange(entries, dtype=np.int64),  # time index inside the episode
        'ep': np.full(entries, ep_id, dtype=np.int64),
        'is_first': is_first,
        'is_last': is_last,
        'is_terminal': is_last.copy(),
        'log_info': np.full(entries, 7, dtype=np.int64),
    }


def feed(replay, episode, worker=0, upto=None):
    """Hand an episode to `add_step` one transition at a time (optionally only a prefix)."""
    entries = len(episode['step']) if upto is None else upto
    for t in range(entries):
        replay.add_step({k: v[t] for k, v in episode.items()}, worker)


def episode_files(directory):
    return sorted(p for p in pathlib.Path(directory).iterdir() if parse_filename(p.name))


def warnings_of(caplog):
    return [r.getMessage() for r in caplog.records
            if r.name == 'dreamerv2_tf.run.replay' and r.levelno >= logging.WARNING]


# ------------------------------------------------------------------------------ files


def test_save_load_round_trip_converts_dtypes(tmp_path):
    episode = make_episode(12, ep_id=3)
    path = save_episode(tmp_path, episode)
    assert path.parent == tmp_path and int(NAME.match(path.name).group(1)) == 12
    # Independent reader: plain zipfile sees one member per key and nothing else.
    assert sorted(zipfile.ZipFile(path).namelist()) == sorted(k + '.npy' for k in episode)
    loaded = load_episode(path)
    expected_dtypes = {'image': np.uint8, 'reward': np.float32, 'action': np.float32,
                       'step': np.int32, 'ep': np.int32, 'is_first': np.bool_,
                       'is_last': np.bool_, 'is_terminal': np.bool_, 'log_info': np.int32}
    assert {k: v.dtype.type for k, v in loaded.items()} == expected_dtypes
    for key, value in episode.items():
        assert loaded[key].shape == value.shape
        np.testing.assert_array_equal(loaded[key], value.astype(expected_dtypes[key]))
    assert not loaded['image'].flags.writeable  # sampled views can never corrupt the store


def test_names_sort_in_write_order_within_one_second(tmp_path):
    for i in range(25):
        save_episode(tmp_path, make_episode(2, ep_id=i))
    files = episode_files(tmp_path)
    seconds = [f.name.split('.')[0] for f in files]
    assert len(set(seconds)) < len(files)  # several share a second, so the suffix matters
    assert [int(load_episode(f)['ep'][0]) for f in files] == list(range(25))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]  # no temp files left


def test_startup_skips_bad_files_with_one_warning_each(tmp_path, caplog):
    good = [save_episode(tmp_path, make_episode(10 + i, ep_id=i)) for i in range(3)]
    # A write killed before its rename: hidden temp name with half the bytes.
    data = good[0].read_bytes()
    (tmp_path / f'.{good[0].name}.999.tmp').write_bytes(data[:len(data) // 2])
    # A damaged file that carries a valid episode name (newer than the good ones).
    truncated = tmp_path / '29991231T235959.000000-0123456789abcdef0123456789abcdef-10.npz'
    truncated.write_bytes(data[:len(data) // 2])
    # Foreign content under an episode name: keys of different lengths.
    foreign_npz = tmp_path / '29991231T235958.000000-fedcba9876543210fedcba9876543210-4.npz'
    np.savez(foreign_npz, a=np.zeros(5), b=np.zeros(3))
    (tmp_path / 'notes.txt').write_text('not an episode\n')

    caplog.set_level(logging.WARNING)
    replay = Replay(tmp_path, minlen=1)
    messages = warnings_of(caplog)
    assert len(messages) == 4, messages
    assert all('\n' not in m for m in messages)
    for bad in (f'.{good[0].name}.999.tmp', truncated.name, foreign_npz.name, 'notes.txt'):
        assert sum(bad in m for m in messages) == 1, (bad, messages)
    stats = replay.stats
    assert stats['loaded_episodes'] == 3 and stats['loaded_steps'] == 10 + 11 + 12
    # Totals count every episode-named file (they are written steps), here 3 good + 2 damaged.
    assert stats['total_episodes'] == 5 and stats['total_steps'] == 33 + 10 + 4
    seen = {int(replay.sample_sequence(np.random.default_rng(s))['ep'][0]) for s in range(40)}
    assert seen == {0, 1, 2}


def test_startup_stats_count_filenames_and_load_newest_within_capacity(tmp_path, caplog):
    lengths = [10, 20, 30, 40]
    paths = [save_episode(tmp_path, make_episode(n, ep_id=i)) for i, n in enumerate(lengths)]
    with caplog.at_level(logging.INFO, logger='dreamerv2_tf.run.replay'):
        replay = Replay(tmp_path, capacity=75, minlen=1)
    stats = replay.stats
    # Spec bug 7: the original reported sum(length) - episodes = 96 here.
    assert stats['total_steps'] == 100 and stats['total_episodes'] == 4
    # Newest first: 40 + 30 = 70; adding 20 would exceed 75.
    assert stats['loaded_steps'] == 70 and stats['loaded_episodes'] == 2
    reference_bytes = sum(v.nbytes for p in paths[2:] for v in load_episode(p).values())
    assert stats['loaded_bytes'] == reference_bytes > 0
    # Memory reported at start, through logging (library code does not print).
    assert 'loaded 70 steps in 2 episodes' in caplog.text and 'MiB' in caplog.text
    rng = np.random.default_rng(0)
    assert {int(replay.sample_sequence(rng)['ep'][0]) for _ in range(50)} == {2, 3}


# ------------------------------------------------------------------------------ capacity


def test_capacity_evicts_oldest_from_memory_but_keeps_files(tmp_path):
    replay = Replay(tmp_path, capacity=50, minlen=1)
    for i in range(5):
        replay.add_episode(make_episode(20, ep_id=i))
        stats = replay.stats
        assert stats['loaded_steps'] <= 50
        assert stats['total_steps'] == 20 * (i + 1)
    assert replay.stats['loaded_episodes'] == 2  # 60 > 50 evicts, 40 stays
    rng = np.random.default_rng(0)
    assert {int(replay.sample_sequence(rng)['ep'][0]) for _ in range(50)} == {3, 4}
    assert len(episode_files(tmp_path)) == 5
    # An episode larger than capacity stays alone rather than leaving the replay empty.
    replay.add_episode(make_episode(80, ep_id=9))
    assert replay.stats['loaded_episodes'] == 1 and replay.stats['loaded_steps'] == 80


def test_delete_evicted_removes_files_and_totals_survive_restart(tmp_path):
    replay = Replay(tmp_path, capacity=50, minlen=1, delete_evicted=True)
    for i in range(5):
        replay.add_episode(make_episode(20, ep_id=i))
    files = episode_files(tmp_path)
    assert [int(load_episode(f)['ep'][0]) for f in files] == [3, 4]
    restarted = Replay(tmp_path, capacity=50, minlen=1, delete_evicted=True)
    assert restarted.stats == {**replay.stats, 'loaded_bytes': restarted.stats['loaded_bytes']}
    assert restarted.stats['total_steps'] == 100 and restarted.stats['total_episodes'] == 5
    assert restarted.stats['loaded_bytes'] == replay.stats['loaded_bytes']


# ------------------------------------------------------------------------------ adding steps


def test_minlen_drops_short_episodes(tmp_path, caplog):
    replay = Replay(tmp_path, minlen=5)
    with caplog.at_level(logging.INFO, logger='dreamerv2_tf.run.replay'):
        feed(replay, make_episode(3))
        replay.add_episode(make_episode(4))
    assert episode_files(tmp_path) == [] and replay.stats['total_episodes'] == 0
    assert caplog.text.count('short episode') == 2
    feed(replay, make_episode(5, ep_id=1))  # exactly minlen is kept
    (path,) = episode_files(tmp_path)
    assert int(NAME.match(path.name).group(1)) == 5
    assert replay.stats == {'total_steps': 5, 'total_episodes': 1, 'loaded_steps': 5,
                            'loaded_episodes': 1, 'loaded_bytes': replay.stats['loaded_bytes']}


def test_add_step_interleaved_workers_store_their_own_episodes(tmp_path):
    replay = Replay(tmp_path, minlen=1)
    a, b = make_episode(6, ep_id=1, seed=1), make_episode(9, ep_id=2, seed=2)
    for t in range(10):  # interleave; worker 'a' finishes first
        if t < 7:
            replay.add_step({k: v[t] for k, v in a.items()}, worker='a')
        replay.add_step({k: v[t] for k, v in b.items()}, worker='b')
    stored = {int(e['ep'][0]): e for e in map(load_episode, episode_files(tmp_path))}
    for ep_id, reference in ((1, a), (2, b)):
        for key, value in reference.items():
            got = stored[ep_id][key]
            np.testing.assert_array_equal(got, value.astype(got.dtype))


def test_clear_ongoing_and_reset_do_not_glue_episodes(tmp_path):
    replay = Replay(tmp_path, minlen=1)
    prefill, real = make_episode(50, ep_id=1), make_episode(8, ep_id=2)
    feed(replay, prefill, upto=20)  # prefill stops mid-episode (spec bug 8)
    assert replay.clear_ongoing() == 19
    feed(replay, real)
    (path,) = episode_files(tmp_path)
    assert int(NAME.match(path.name).group(1)) == 8
    assert (load_episode(path)['ep'] == 2).all()
    # Without clear_ongoing, a new reset observation still starts a fresh episode.
    feed(replay, make_episode(50, ep_id=3), upto=20, worker=1)
    feed(replay, make_episode(4, ep_id=4), worker=1)
    newest = load_episode(episode_files(tmp_path)[-1])
    assert len(newest['ep']) == 5 and (newest['ep'] == 4).all()
    # Steps arriving mid-episode after a clear are dropped until the next reset.
    feed(replay, make_episode(6, ep_id=5), upto=3, worker=2)
    replay.clear_ongoing(worker=2)
    tail = make_episode(6, ep_id=5)
    for t in range(3, 7):
        replay.add_step({k: v[t] for k, v in tail.items()}, worker=2)
    assert len(episode_files(tmp_path)) == 2


def test_add_step_rejects_mismatched_keys():
    replay = Replay(None, minlen=1)
    episode = make_episode(3)
    replay.add_step({k: v[0] for k, v in episode.items()})
    with pytest.raises(ValueError, match='keys'):
        replay.add_step({k: v[1] for k, v in episode.items() if k != 'reward'})


# ------------------------------------------------------------------------------ sampling


def last_step_frequency(prioritize_ends, samples=3000):
    replay = Replay(None, minlen=10, maxlen=10, prioritize_ends=prioritize_ends, seed=0)
    for i in range(4):
        replay.add_episode(make_episode(100, ep_id=i))
    rng = np.random.default_rng(123)
    hits = 0
    for _ in range(samples):
        sequence = replay.sample_sequence(rng)
        assert len(sequence['step']) == 10
        hits += bool(sequence['is_last'].any())
    return hits / samples


def test_prioritize_ends_samples_episode_ends_more_often():
    uniform, prioritized = last_step_frequency(False), last_step_frequency(True)
    # Independent reference: 101 entries, windows of 10 -> 92 start indices; prioritize_ends adds
    # minlen = 10 extra draws that all clamp onto the final window.
    expected_uniform, expected_prioritized = 1 / 92, 11 / 102
    for freq, p in ((uniform, expected_uniform), (prioritized, expected_prioritized)):
        sigma = np.sqrt(p * (1 - p) / 3000)
        assert abs(freq - p) < 4 * sigma, (freq, p)
    assert prioritized > 5 * uniform


def test_sampling_is_uniform_over_episodes_not_steps():
    replay = Replay(None, minlen=10, maxlen=10)
    replay.add_episode(make_episode(20, ep_id=0))
    replay.add_episode(make_episode(400, ep_id=1))
    rng = np.random.default_rng(1)
    short = np.mean([replay.sample_sequence(rng)['ep'][0] == 0 for _ in range(2000)])
    assert abs(short - 0.5) < 0.05  # per-step sampling would give 20/420


def test_sequence_lengths_follow_minlen_maxlen_jitter():
    replay = Replay(None, minlen=5, maxlen=10)
    replay.add_episode(make_episode(100, ep_id=0))
    replay.add_episode(make_episode(7, ep_id=1))
    rng = np.random.default_rng(2)
    lengths = {0: set(), 1: set()}
    for _ in range(600):
        sequence = replay.sample_sequence(rng)
        ep_id = int(sequence['ep'][0])
        lengths[ep_id].add(len(sequence['step']))
        np.testing.assert_array_equal(np.diff(sequence['step']), 1)  # one contiguous window
        assert (sequence['ep'] == ep_id).all()
        assert sequence['is_first'][0] and not sequence['is_first'][1:].any()
        assert 'log_info' not in sequence
    # min(entries, maxlen) - U{0..minlen-1}, floored at minlen.
    assert lengths[0] == {6, 7, 8, 9, 10}
    assert lengths[1] == {5, 6, 7, 8}


def test_ongoing_episodes_are_sampled_only_when_enabled_and_long_enough():
    episode = make_episode(30, ep_id=5)
    for ongoing in (False, True):
        replay = Replay(None, minlen=5, maxlen=5, ongoing=ongoing)
        feed(replay, episode, upto=5)  # 4 transitions < minlen
        with pytest.raises(RuntimeError, match='no complete'):
            replay.sample_sequence(np.random.default_rng(0))
        feed_more = {k: v[5:9] for k, v in episode.items()}
        for t in range(4):
            replay.add_step({k: v[t] for k, v in feed_more.items()})
        if not ongoing:
            with pytest.raises(RuntimeError):
                replay.sample_sequence(np.random.default_rng(0))
            continue
        rng = np.random.default_rng(0)
        starts = set()
        for _ in range(200):
            sequence = replay.sample_sequence(rng)
            assert (sequence['ep'] == 5).all() and sequence['step'].max() <= 8
            starts.add(int(sequence['step'][0]))
        assert starts == {0, 1, 2, 3, 4}  # 9 entries, windows of 5


@pytest.mark.parametrize('minlen,maxlen,chunk', [(12, 12, 5), (4, 4, 10), (3, 8, 5)])
def test_chunks_are_the_sampled_sequence_stream_cut_into_fixed_lengths(minlen, maxlen, chunk):
    replay = Replay(None, minlen=minlen, maxlen=maxlen, prioritize_ends=True)
    for i in range(3):
        replay.add_episode(make_episode(40, ep_id=i, seed=i))
    count = 12
    chunks = replay.chunks(chunk, np.random.default_rng(9))
    got = [next(chunks) for _ in range(count)]
    # Reference: the same random stream drawn as whole sequences, concatenated, cut up.
    rng = np.random.default_rng(9)
    sequences = []
    while sum(len(s['step']) for s in sequences) < count * chunk:
        sequences.append(replay.sample_sequence(rng))
    stream = {k: np.concatenate([s[k] for s in sequences]) for k in sequences[0]}
    for i, c in enumerate(got):
        assert set(c) == set(stream)
        for key, value in c.items():
            assert len(value) == chunk
            np.testing.assert_array_equal(value, stream[key][i * chunk:(i + 1) * chunk])
    # is_first marks exactly the sequence starts in the stream.
    starts = np.cumsum([0] + [len(s['step']) for s in sequences])[:-1]
    flags = np.concatenate([c['is_first'] for c in got])
    assert list(np.flatnonzero(flags)) == [s for s in starts if s < count * chunk]


def test_sampling_while_adding_from_another_thread():
    replay = Replay(None, capacity=200, minlen=5, maxlen=10, ongoing=True)
    replay.add_episode(make_episode(30))
    errors, done, drawn = [], threading.Event(), [0]

    def sample():
        try:
            chunks = replay.chunks(7, np.random.default_rng(0))
            while not done.is_set():  # keeps sampling for as long as the adds run
                chunk = next(chunks)
                assert len(chunk['step']) == 7
                drawn[0] += 1
        except Exception as e:  # reported below
            errors.append(e)

    thread = threading.Thread(target=sample)
    thread.start()
    for i in range(40):
        feed(replay, make_episode(25, ep_id=i, seed=i), worker=i % 3)
    done.set()
    thread.join()
    assert not errors and drawn[0] > 0 and replay.stats['loaded_steps'] <= 200


# ------------------------------------------------------------------------------ tf.data


def test_dataset_shapes_dtypes_and_is_first(tmp_path):
    import tensorflow as tf

    replay = Replay(tmp_path, minlen=10, maxlen=10, prioritize_ends=True, seed=0)
    for i in range(3):
        replay.add_episode(make_episode(30, ep_id=i, seed=i))
    batch = next(iter(replay.dataset(batch=4, length=10)))
    expected = {'image': ((4, 10, 4, 4, 1), tf.uint8), 'reward': ((4, 10), tf.float32),
                'action': ((4, 10, 2), tf.float32), 'step': ((4, 10), tf.int32),
                'ep': ((4, 10), tf.int32), 'is_first': ((4, 10), tf.bool),
                'is_last': ((4, 10), tf.bool), 'is_terminal': ((4, 10), tf.bool)}
    assert {k: (tuple(v.shape), v.dtype) for k, v in batch.items()} == expected
    is_first = batch['is_first'].numpy()
    assert is_first[:, 0].all() and not is_first[:, 1:].any()
    step = batch['step'].numpy()
    assert (np.diff(step, axis=1) == 1).all()
    # Each row is the stored episode's window (values survive the generator and batching).
    episodes = {int(e['ep'][0]): e for e in map(load_episode, episode_files(tmp_path))}
    for row in range(4):
        source = episodes[int(batch['ep'][row, 0])]
        window = slice(step[row, 0], step[row, 0] + 10)
        np.testing.assert_array_equal(batch['image'][row].numpy(), source['image'][window])
        np.testing.assert_array_equal(batch['reward'][row].numpy(), source['reward'][window])


def test_dataset_is_reproducible_with_the_same_seed():
    def first_batches(seed):
        replay = Replay(None, minlen=3, maxlen=8, prioritize_ends=True, seed=seed)
        for i in range(5):
            replay.add_episode(make_episode(20, ep_id=i, seed=i))
        iterator = iter(replay.dataset(batch=3, length=6))
        return [{k: v.numpy() for k, v in next(iterator).items()} for _ in range(3)]

    a, b, c = first_batches(7), first_batches(7), first_batches(8)
    for x, y in zip(a, b):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    assert any(not np.array_equal(x['step'], z['step']) or not np.array_equal(x['ep'], z['ep'])
               for x, z in zip(a, c))


def test_dataset_on_empty_replay_raises_clearly():
    replay = Replay(None, minlen=5)
    replay.add_episode(make_episode(3))  # dropped: shorter than minlen
    with pytest.raises(ValueError, match='collect data'):
        replay.dataset(batch=2, length=5)


# ------------------------------------------------------------------------------ crash safety

WRITER = textwrap.dedent('''
    import logging, sys
    import numpy as np
    from dreamerv2_tf.run.replay import Replay
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format='%(message)s')
    replay = Replay(sys.argv[1], minlen=1)
    first = int(sys.argv[2])
    rng = np.random.default_rng(first)
    print('ready', flush=True)
    for i in range(first, first + 10000):
        length = int(rng.integers(20, 60))
        episode = {'image': rng.integers(0, 256, (length + 1, 32, 32, 3), dtype=np.uint8),
                   'id': np.full(length + 1, i), 'is_last': np.arange(length + 1) == length}
        print('saved', replay.add_episode(episode).name, flush=True)
''')


def test_sigkill_at_random_moments_leaves_only_whole_episodes(tmp_path, caplog):
    directory = tmp_path / 'train_episodes'
    script = tmp_path / 'writer.py'
    script.write_text(WRITER)
    timing = random.Random(0)
    reported = []
    for round_ in range(3):
        child = subprocess.Popen([sys.executable, str(script), str(directory), str(1000 * round_)],
                                 stdout=subprocess.PIPE, text=True)
        startup = list(iter(child.stdout.readline, 'ready\n'))  # warnings, then the report
        assert startup[-1].startswith('Replay ') and 'loaded' in startup[-1], startup
        time.sleep(timing.uniform(0.1, 0.6))
        os.kill(child.pid, signal.SIGKILL)
        out, _ = child.communicate()
        reported += [line.split()[1] for line in out.splitlines() if line.startswith('saved ')]
    assert len(reported) >= 3
    caplog.set_level(logging.WARNING)
    replay = Replay(directory, minlen=1)
    # The only thing a kill may leave is a temp file, which is ignored with a warning.
    assert all('temporary' in m for m in warnings_of(caplog)), warnings_of(caplog)
    files = episode_files(directory)
    assert set(reported) <= {f.name for f in files}
    assert replay.stats['loaded_episodes'] == len(files)  # every named file loaded in full
    ids = [int(load_episode(f)['id'][0]) for f in files]
    assert len(ids) == len(set(ids))  # nothing written twice
    assert replay.stats['total_steps'] == sum(int(NAME.match(f.name).group(1)) for f in files)


def test_module_import_does_not_load_tensorflow():
    code = 'import sys, dreamerv2_tf.run.replay; print("tensorflow" in sys.modules)'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == 'False'


DIES_BEFORE_RENAME = textwrap.dedent('''
    import os, signal, sys
    import numpy as np
    from dreamerv2_tf.run.replay import Replay
    replay = Replay(sys.argv[1], minlen=1)
    episode = {'x': np.arange(11.0), 'is_last': np.arange(11) == 10}
    replay.add_episode(episode)
    # Simulate a kill after the bytes are written and synced but before the rename.
    os.replace = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
    replay.add_episode(episode)
    print('not reached', flush=True)
''')


def test_kill_between_write_and_rename_leaves_only_an_ignored_temp_file(tmp_path, caplog):
    script = tmp_path / 'dies.py'
    script.write_text(DIES_BEFORE_RENAME)
    result = subprocess.run([sys.executable, str(script), str(tmp_path / 'eps')],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == -signal.SIGKILL and 'not reached' not in result.stdout
    assert len(episode_files(tmp_path / 'eps')) == 1
    assert len([p for p in (tmp_path / 'eps').iterdir() if p.name.endswith('.tmp')]) == 1
    caplog.set_level(logging.WARNING)
    replay = Replay(tmp_path / 'eps', minlen=1)
    assert [('temporary' in m) for m in warnings_of(caplog)] == [True]
    assert replay.stats['loaded_episodes'] == replay.stats['total_episodes'] == 1


# ------------------------------------------------------------------------------ resuming


def test_restored_sampler_continues_the_chunks_of_the_uninterrupted_one():
    from dreamerv2_tf.run.replay import Sampler
    replay = Replay(None, minlen=3, maxlen=7)
    for length in (5, 9, 12, 4):
        replay.add_episode(make_episode(length))
    whole = Sampler(replay, 4, np.random.default_rng(11))
    expected = [next(whole) for _ in range(30)]
    for cut in (1, 7, 13):  # chunks before the "checkpoint"; sequences span chunks
        first = Sampler(replay, 4, np.random.default_rng(11))
        for _ in range(cut):
            next(first)
        state = first.state()
        resumed = Sampler(replay, 4, np.random.default_rng(999))  # another stream, replaced
        resumed.set_state(state)
        for want in expected[cut:]:
            got = next(resumed)
            assert got.keys() == want.keys()
            for key in want:
                np.testing.assert_array_equal(got[key], want[key])
    with pytest.raises(ValueError, match='chunks of 4 steps, not 5'):
        Sampler(replay, 5, np.random.default_rng(0)).set_state(state)


def test_set_aside_after_moves_newer_episodes_and_reloads(tmp_path, caplog):
    replay = Replay(tmp_path / 'eps', minlen=1)
    paths = [replay.add_episode(make_episode(length)) for length in (3, 4, 5, 6)]
    assert replay.newest == paths[-1].name
    moved = replay.set_aside_after(paths[1].name, tmp_path / 'aside')
    assert moved == 2
    assert sorted(p.name for p in (tmp_path / 'aside').iterdir()) == sorted(
        p.name for p in paths[2:])
    assert sorted(p.name for p in episode_files(tmp_path / 'eps')) == sorted(
        p.name for p in paths[:2])
    assert replay.stats['total_steps'] == 3 + 4 and replay.stats['loaded_episodes'] == 2
    assert replay.newest == paths[1].name
    assert Replay(tmp_path / 'eps', minlen=1).stats['total_steps'] == 7
    assert replay.set_aside_after(None, tmp_path / 'aside') == 2  # no checkpoint: all
    assert replay.stats['loaded_episodes'] == 0 and len(list((tmp_path / 'aside').iterdir())) == 4


def test_byte_budget_evicts_the_oldest_episodes(tmp_path):
    step_bytes = sum(v[:1].nbytes for v in convert_episode(make_episode(1)).values())
    replay = Replay(None, minlen=1, max_bytes=30 * step_bytes)
    for length in (9, 9, 9, 9):  # 10 entries each
        replay.add_episode(make_episode(length))
    assert replay.stats['loaded_bytes'] == 30 * step_bytes  # three fit, the first went
    assert replay.stats['loaded_episodes'] == 3 and replay.stats['total_episodes'] == 4


def test_episode_with_other_keys_than_the_newest_is_skipped(tmp_path, caplog):
    replay = Replay(tmp_path, minlen=1)
    replay.add_episode({'other': np.zeros(6, np.float32), 'is_last': np.arange(6) == 5})
    replay.add_episode(make_episode(5))
    replay.add_episode(make_episode(6))
    caplog.set_level(logging.WARNING)
    loaded = Replay(tmp_path, minlen=1)
    assert loaded.stats['loaded_episodes'] == 2
    assert any('keys' in m and 'differ' in m for m in warnings_of(caplog))
    chunk = next(loaded.chunks(3, np.random.default_rng(0)))
    assert 'other' not in chunk
