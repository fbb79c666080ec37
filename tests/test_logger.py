"""Tests for dreamerv2_tf.run.logger: kinds, steps, fps, terminal, JSONL, TensorBoard, progress."""

import io
import json
import logging
import math
import subprocess
import sys

import numpy as np
import pytest

from dreamerv2_tf.run import logger as logmod
from dreamerv2_tf.run.logger import (JSONLOutput, Logger, ProgressLine, TerminalOutput, encode_gif,
                                 format_duration, format_number)


class Recorder:
    """Output that keeps what it was given."""

    def __init__(self):
        self.calls = []

    def write(self, step, records):
        self.calls.append((step, list(records)))


class FakeClock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


class FakeTensor:
    """Stands in for a TF eager tensor (has .numpy()) without importing TensorFlow."""

    def __init__(self, value):
        self._value = np.asarray(value)

    def numpy(self):
        return self._value


def read_jsonl(path):
    text = path.read_text()
    assert text == '' or text.endswith('\n')
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture(autouse=True)
def _no_open_progress_line():
    # The progress-line coordination is module state; keep tests independent.
    logmod._open_progress = None
    yield
    logmod._open_progress = None


# ----------------------------------------------------------------------------------------------
# Import


def test_import_does_not_load_tensorflow_or_pil():
    code = ('import sys, dreamerv2_tf.run.logger; '
            'print("tensorflow" in sys.modules, "PIL" in sys.modules)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ['False', 'False']


# ----------------------------------------------------------------------------------------------
# Logger


def test_add_converts_by_rank_and_prefixes_names():
    out = Recorder()
    log = Logger([out])
    video = np.array([0.0, 0.5, 1.0, 1.2, -0.1, np.nan], np.float32).reshape(6, 1, 1, 1)
    raw = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)
    log.add({'a': 1, 'b': np.float32(2.5), 'c': FakeTensor(3.25), 'd': np.bool_(True),
             'gray': np.full((5, 7), 0.5), 'vid': video, 'raw': raw}, prefix='train')
    log.scalar('plain', np.array(4.0, np.float64))
    log.write(3)
    (step, records), = out.calls
    values = dict(records)
    assert step == 3
    assert list(values) == ['train_a', 'train_b', 'train_c', 'train_d', 'train_gray', 'train_vid',
                            'train_raw', 'plain']
    assert [type(values[k]) for k in ('train_a', 'train_b', 'train_c', 'plain')] == [float] * 4
    assert (values['train_a'], values['train_b'], values['train_c'], values['train_d']) == (
        1.0, 2.5, 3.25, 1.0)
    assert values['train_gray'].shape == (5, 7, 1) and values['train_gray'].dtype == np.uint8
    assert (values['train_gray'] == 127).all()  # clip(255 * 0.5) truncated
    assert values['train_vid'].dtype == np.uint8
    assert values['train_vid'].ravel().tolist() == [0, 127, 255, 255, 0, 0]
    assert values['train_raw'] is not raw and np.array_equal(values['train_raw'], raw)


def test_logged_value_is_a_snapshot():
    out = Recorder()
    log = Logger([out])
    frames = np.zeros((2, 3, 3, 3), np.uint8)
    log.video('v', frames)
    frames[:] = 9  # the caller reuses its buffer before the write
    log.write(0)
    assert (out.calls[0][1][0][1] == 0).all()


@pytest.mark.parametrize('name, value, shape', [
    ('vec', np.zeros(3), '(3,)'),
    ('five', np.zeros((1, 2, 3, 4, 3)), '(1, 2, 3, 4, 3)'),
    ('twoch', np.zeros((2, 4, 4, 2)), '(2, 4, 4, 2)'),
    ('empty', np.zeros((0, 4, 4, 3)), '(0, 4, 4, 3)'),
])
def test_bad_shapes_raise_naming_key_and_shape(name, value, shape):
    log = Logger([Recorder()])
    with pytest.raises(ValueError) as info:
        log.add({'ok': 1.0, name: value}, prefix='p')
    assert f'p_{name}' in str(info.value) and shape in str(info.value)
    assert log._pending == []  # the valid value before it was not half-added


def test_bad_types_and_helper_kind_mismatch_raise():
    log = Logger([Recorder()])
    with pytest.raises(ValueError, match="'s'.*dtype"):
        log.add({'s': 'hello'})
    with pytest.raises(ValueError, match="'img'.*shape \\(4, 4\\).*not a scalar"):
        log.scalar('img', np.zeros((4, 4)))
    with pytest.raises(ValueError, match="'x'.*not a video"):
        log.video('x', np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="'y'.*not a image"):
        log.image('y', 1.0)


def test_write_multiplies_step_clears_and_is_noop_when_empty():
    out = Recorder()
    log = Logger([out], multiplier=4)
    log.write(10)
    assert out.calls == []  # nothing pending
    log.add({'a': 1.0})
    log.write(10)
    log.write(11)
    log.add({'b': 2.0})
    log.write(np.int64(12))
    assert out.calls == [(40, [('a', 1.0)]), (48, [('b', 2.0)])]


def test_fps_against_fake_clock():
    out = Recorder()
    clock = FakeClock()
    log = Logger([out], multiplier=4, clock=clock)
    log.add({'a': 1.0})
    log.write(100, fps=True)  # first fps write: baseline only, no misleading 0
    assert out.calls == [(400, [('a', 1.0)])]
    clock.now += 2.0
    log.write(150, fps=True)  # (600 - 400) frames / 2 s
    assert out.calls[-1] == (600, [('fps', 100.0)])
    clock.now += 0.5
    log.add({'b': 0.0})
    log.write(160, fps=True)  # (640 - 600) / 0.5
    assert out.calls[-1] == (640, [('b', 0.0), ('fps', 80.0)])


def test_rate_helper_for_updates_per_second():
    out = Recorder()
    clock = FakeClock()
    log = Logger([out], clock=clock)
    assert log.rate('updates_per_sec', 10) is None
    clock.now += 4.0
    assert log.rate('updates_per_sec', 30) == 5.0
    log.write(1)
    assert out.calls == [(1, [('updates_per_sec', 5.0)])]


def test_failing_output_does_not_starve_the_others():
    class Broken:
        def write(self, step, records):
            raise OSError('disk full')

    out = Recorder()
    log = Logger([Broken(), out])
    log.add({'a': 1.0})
    with pytest.raises(OSError):
        log.write(0)
    assert out.calls == [(0, [('a', 1.0)])]
    log.write(1)  # pending was cleared despite the error
    assert len(out.calls) == 1


# ----------------------------------------------------------------------------------------------
# Terminal


@pytest.mark.parametrize('value, text', [
    (0, '0'), (1.0, '1'), (12.30, '12.3'), (0.014, '0.01'), (-0.5, '-0.5'), (3.14159, '3.14'),
    (9999.99, '9999.99'), (10000, '1e4'), (123456, '1.2e5'), (-123456, '-1.2e5'),
    (0.01, '1e-2'), (0.001234, '1.2e-3'), (1e-5, '1e-5'), (-2.5e-7, '-2.5e-7'),
    (float('nan'), 'nan'), (float('-inf'), '-inf'),
])
def test_format_number(value, text):
    assert format_number(value) == text


def test_terminal_line_sorted_filtered_scalars_only(capsys):
    out = TerminalOutput(pattern='return|loss')
    out.write(40, [('train_return', 12.5), ('model_loss', 123456.0), ('fps', 300.0),
                   ('img', np.zeros((2, 2, 1), np.uint8)), ('eval_return', 0.001234)])
    out.write(41, [('fps', 1.0)])  # nothing matches: no line
    assert capsys.readouterr().out == (
        '[40] eval_return 1.2e-3 / model_loss 1.2e5 / train_return 12.5\n')


# ----------------------------------------------------------------------------------------------
# JSONL


def _write_rows(tmp_path):
    out = JSONLOutput(tmp_path)
    log = Logger([out], multiplier=2)
    log.add({'return': 1.5, 'length': 100})
    log.write(5)
    log.add({'return': float('nan'), 'loss': float('inf'), 'img': np.zeros((2, 2))})
    log.write(6)
    log.image('only_image', np.zeros((2, 2)))
    log.write(7)  # no scalars: no line
    return out.path


def test_jsonl_lines_parse_with_json(tmp_path):
    path = _write_rows(tmp_path)
    assert path == tmp_path / 'metrics.jsonl'
    rows = read_jsonl(path)
    assert rows == [{'step': 10, 'return': 1.5, 'length': 100.0},
                    {'step': 12, 'return': None, 'loss': None}]
    assert 'NaN' not in path.read_text() and 'Infinity' not in path.read_text()


def test_jsonl_reads_with_pandas(tmp_path):
    pd = pytest.importorskip('pandas')
    frame = pd.read_json(_write_rows(tmp_path), lines=True)
    assert frame['step'].tolist() == [10, 12]
    assert frame['return'].iloc[0] == 1.5 and math.isnan(frame['return'].iloc[1])


def test_jsonl_repairs_partial_last_line(tmp_path, caplog):
    path = tmp_path / 'metrics.jsonl'
    path.write_bytes(b'{"step": 1, "a": 1.0}\n{"step": 2, "a": 2.0}\n{"step": 3, "a"')
    with caplog.at_level(logging.WARNING, logger='dreamerv2_tf.run.logger'):
        out = JSONLOutput(tmp_path)
    assert len(caplog.records) == 1 and 'partial last line' in caplog.records[0].getMessage()
    out.write(4, [('a', 4.0)])
    assert read_jsonl(path) == [{'step': 1, 'a': 1.0}, {'step': 2, 'a': 2.0},
                                {'step': 4, 'a': 4.0}]


def test_jsonl_repair_edge_cases(tmp_path, caplog):
    good = b'{"step": 1, "a": 1.0}\n'
    cases = {
        'intact': (good, good, 0),
        'only_partial': (b'{"ste', b'', 1),
        'garbage_complete_line': (good + b'\x00\x00\x00\n', good, 1),  # e.g. after power loss
        'empty': (b'', b'', 0),
    }
    for name, (before, after, warnings) in cases.items():
        (tmp_path / name).mkdir()
        path = tmp_path / name / 'metrics.jsonl'
        path.write_bytes(before)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger='dreamerv2_tf.run.logger'):
            JSONLOutput(tmp_path / name)
        assert path.read_bytes() == after, name
        assert len(caplog.records) == warnings, name


def test_jsonl_finds_line_start_across_read_chunks(tmp_path):
    # A partial line longer than the backwards-read chunk (4096 bytes).
    path = tmp_path / 'metrics.jsonl'
    line = b'{"step": 1, "a": 1.0}\n'
    path.write_bytes(line + b'{"step": 2, "' + b'x' * 10000)
    JSONLOutput(tmp_path)
    assert path.read_bytes() == line


# ----------------------------------------------------------------------------------------------
# GIF


def _decode_gif(data):
    from PIL import Image
    image = Image.open(io.BytesIO(data))
    frames = []
    for index in range(image.n_frames):
        image.seek(index)
        frames.append(np.array(image.convert('RGB')))
    return image, np.stack(frames)


def test_encode_gif_roundtrip_gray_and_rgb():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (7, 9, 11, 1), dtype=np.uint8)
    image, frames = _decode_gif(encode_gif(gray, fps=20))
    assert image.info['duration'] == 50 and image.size == (11, 9)
    assert frames.shape == (7, 9, 11, 3) and np.array_equal(frames[..., 0], gray[..., 0])
    # Few colours (like Atari) fit the palette exactly.
    colours = rng.integers(0, 256, (12, 3), dtype=np.uint8)
    rgb = colours[rng.integers(0, 12, (5, 16, 20))]
    _, frames = _decode_gif(encode_gif(rgb, fps=10))
    assert np.array_equal(frames, rgb)
    # Many colours: approximate but close.
    noisy = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    _, frames = _decode_gif(encode_gif(noisy))
    assert frames.shape == noisy.shape
    assert np.abs(frames.astype(int) - noisy).mean() < 20
    with pytest.raises(ValueError):
        encode_gif(noisy.astype(np.float32))


# ----------------------------------------------------------------------------------------------
# TensorBoard


def _events(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    accumulator = EventAccumulator(str(logdir), size_guidance={'images': 0, 'tensors': 0,
                                                               'scalars': 0})
    accumulator.Reload()
    return accumulator


def _tensor_values(accumulator, tag):
    from tensorboard.util import tensor_util
    return [(e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in accumulator.Tensors(tag)]


def test_tensorboard_scalars_images_gif_videos(tmp_path):
    tf = pytest.importorskip('tensorflow')
    from PIL import Image

    rng = np.random.default_rng(0)
    board = logmod.TensorBoardOutput(tmp_path / 'tb')
    log = Logger([board], multiplier=4)
    rgb = rng.random((6, 12, 10, 3)).astype(np.float32)
    gray = rng.integers(0, 256, (5, 8, 9, 1), dtype=np.uint8)
    log.add({'return': 1.5, 'loss': tf.constant(0.25), 'obs': rng.random((12, 10, 3)),
             'openl_image': rgb, 'policy_gray': gray}, prefix='eval')
    log.write(10)
    log.add({'return': 2.5}, prefix='eval')
    log.write(20)
    board.close()

    events = _events(tmp_path / 'tb')
    assert set(events.Tags()['tensors']) == {'eval_return', 'eval_loss', 'eval_obs'}
    assert set(events.Tags()['images']) == {'eval_openl_image', 'eval_policy_gray'}
    assert [(s, float(v)) for s, v in _tensor_values(events, 'eval_return')] == [(40, 1.5),
                                                                                (80, 2.5)]
    assert [(s, float(v)) for s, v in _tensor_values(events, 'eval_loss')] == [(40, 0.25)]
    (step, obs), = _tensor_values(events, 'eval_obs')  # image summary: [width, height, png]
    assert step == 40 and obs[:2].tolist() == [b'10', b'12']
    assert Image.open(io.BytesIO(obs[2])).size == (10, 12)
    for tag, frames, channels in (('eval_openl_image', rgb, 3), ('eval_policy_gray', gray, 1)):
        event, = events.Images(tag)
        assert (event.step, event.width, event.height) == (40, frames.shape[2], frames.shape[1])
        image = Image.open(io.BytesIO(event.encoded_image_string))
        assert image.format == 'GIF' and image.n_frames == len(frames)
        assert image.size == (frames.shape[2], frames.shape[1])


def test_tensorboard_leaves_callers_default_writer_alone(tmp_path):
    tf = pytest.importorskip('tensorflow')
    board = logmod.TensorBoardOutput(tmp_path / 'ours')
    other = tf.summary.create_file_writer(str(tmp_path / 'other'))
    log = Logger([board])
    with other.as_default(), tf.summary.record_if(False):
        log.add({'inside': 1.0})
        log.write(1)  # still recorded despite record_if(False)
        assert not tf.summary.should_record_summaries()  # the caller's record_if is back
    with other.as_default():
        log.add({'inside2': 2.0})
        log.write(2)
        assert tf.summary.scalar('theirs', 3.0, step=3)  # still goes to the caller's writer
    other.flush()
    assert not tf.summary.scalar('orphan', 1.0, step=0)  # no default writer was left behind
    board.close()
    assert set(_events(tmp_path / 'ours').Tags()['tensors']) == {'inside', 'inside2'}
    assert set(_events(tmp_path / 'other').Tags()['tensors']) == {'theirs'}


def test_tensorboard_falls_back_to_frames_when_gif_fails(tmp_path, monkeypatch, caplog):
    pytest.importorskip('tensorflow')

    def broken(frames, fps):
        raise RuntimeError('no encoder')

    monkeypatch.setattr(logmod, 'encode_gif', broken)
    board = logmod.TensorBoardOutput(tmp_path, max_fallback_frames=4)
    frames = np.random.default_rng(0).integers(0, 256, (10, 6, 5, 3), dtype=np.uint8)
    with caplog.at_level(logging.WARNING, logger='dreamerv2_tf.run.logger'):
        board.write(7, [('vid', frames)])
    board.close()
    assert 'no encoder' in caplog.text
    (step, value), = _tensor_values(_events(tmp_path), 'vid')
    assert step == 7 and len(value) == 2 + 4  # width, height, then 4 evenly spaced PNG frames


# ----------------------------------------------------------------------------------------------
# Progress line


def test_progress_eta_from_recent_rate_and_throttled_plain_lines():
    clock = FakeClock(0.0)
    stream = io.StringIO()
    progress = ProgressLine(stream=stream, interval=40.0, window=60.0, tty=False, clock=clock)
    line = progress.update(0, 10000, fps=0.0)
    assert progress.eta is None and line.endswith('ETA ?')
    clock.now = 50.0
    progress.update(1000, 10000)
    assert progress.rate == 1000 / 50 and progress.eta == 450.0
    clock.now = 100.0
    progress.update(6000, 10000)  # window start 40: anchor is still t=0 -> 6000 / 100
    assert progress.rate == 60.0 and progress.eta == pytest.approx(4000 / 60)
    clock.now = 130.0
    line = progress.update(7000, 10000, fps=280.0, ret=12.345, updates_per_sec=4.5)  # not printed:
    # only 30 s since the previous line.
    # Window start 70: t=0 is dropped, anchor t=50 (step 1000): 6000 steps / 80 s = 75 /s,
    # 3000 remaining / 75 = 40 s.
    assert progress.rate == 75.0 and progress.eta == 40.0
    assert line == 'step 7000/10000 (70.0%) | fps 280 | upd/s 4.5 | return 12.35 | ETA 0:00:40'
    clock.now = 131.0
    progress.update(10000, 10000)  # completion always prints
    assert stream.getvalue().splitlines() == [
        'step 0/10000 (0.0%) | fps 0 | ETA ?',
        'step 1000/10000 (10.0%) | ETA 0:07:30',
        'step 6000/10000 (60.0%) | ETA 0:01:07',
        'step 10000/10000 (100.0%) | ETA 0:00:00',
    ]


def test_progress_tty_redraws_in_place_and_terminal_output_breaks_the_line():
    clock = FakeClock(0.0)
    stream = io.StringIO()
    progress = ProgressLine(stream=stream, tty=True, interval=0.0, clock=clock)
    progress.update(0, 100)
    clock.now = 2.0
    progress.update(10, 100)
    TerminalOutput(stream=stream).write(40, [('a', 1.0)])
    clock.now = 3.0
    progress.update(20, 100)
    progress.close()
    assert stream.getvalue() == (
        '\rstep 0/100 (0.0%) | ETA ?\x1b[K'
        '\rstep 10/100 (10.0%) | ETA 0:00:18\x1b[K\n'
        '[40] a 1\n'
        '\rstep 20/100 (20.0%) | ETA 0:00:12\x1b[K\n')


def test_format_duration():
    assert [format_duration(s) for s in (None, float('inf'), 0, 59.6, 3725, 100 * 3600)] == [
        '?', '?', '0:00:00', '0:01:00', '1:02:05', '100:00:00']


def test_progress_measures_fps_and_updates_per_second_over_the_window():
    clock = FakeClock()
    stream = io.StringIO()
    progress = ProgressLine(stream=stream, interval=0.0, window=60.0, tty=False, clock=clock,
                            multiplier=4)
    progress.update(1000, 10000, updates=10)
    clock.now += 20.0
    line = progress.update(1500, 10000, updates=40)
    # 500 steps in 20 s = 25 steps/s = 100 frames/s; 30 updates in 20 s = 1.5 updates/s.
    assert 'fps 100 ' in line and 'upd/s 1.5 ' in line
    assert progress.eta == pytest.approx(8500 / 25)
