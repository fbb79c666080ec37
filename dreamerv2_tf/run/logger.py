"""Metric logging: a `Logger` that batches values and hands them to outputs on `write(step)`.

Outputs: `TerminalOutput` (one line per write), `JSONLOutput` (`metrics.jsonl`, one JSON object per
write), `TensorBoardOutput` (scalars, images, and videos as animated GIFs). `ProgressLine` is a
separate terminal progress display (step/total, percent, fps, return, ETA).

Importing this module does not import TensorFlow: only `TensorBoardOutput` does, when it is
constructed. PIL is imported only when a GIF is encoded. NumPy is the one eager dependency.

Value kinds (decided by rank, see `Logger.add`): rank 0 -> scalar (a Python float), rank 2/3 ->
image (uint8 [H, W, C]), rank 4 -> video (uint8 [T, H, W, C]). Outputs receive a list of
`(name, value)` pairs and tell the kinds apart by type and `ndim`, so any object with a
`write(step, records)` method can be an output.
"""

import collections
import io
import json
import logging
import math
import os
import pathlib
import re
import sys
import time

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    'Logger', 'TerminalOutput', 'JSONLOutput', 'TensorBoardOutput', 'ProgressLine', 'encode_gif',
    'format_number', 'format_duration', 'break_progress_line',
]


# ----------------------------------------------------------------------------------------------
# Value conversion


def _to_numpy(name, value):
    if hasattr(value, 'numpy'):  # TF eager tensors and variables, without importing TF
        value = value.numpy()
    array = np.asarray(value)
    if array.dtype.kind in 'biuf':
        return array
    if array.dtype.kind not in 'USOcMm':  # strings, objects, complex, datetimes
        # Extension floats such as bfloat16 (ml_dtypes) have kind 'V'; they convert cleanly.
        try:
            return array.astype(np.float32)
        except (TypeError, ValueError):
            pass
    raise ValueError(f"Logger: value for '{name}' has unsupported dtype {array.dtype} "
                     f'(shape {array.shape}); expected a real number or numeric array.')


def _to_uint8(array):
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind == 'b':
        return array.astype(np.uint8) * 255
    if array.dtype.kind == 'f':
        # Float pixels are taken to be in [0, 1]; NaN would make the cast undefined, so zero it.
        array = np.nan_to_num(array.astype(np.float32), nan=0.0)
        return np.clip(255 * array, 0, 255).astype(np.uint8)
    # Integer pixels are taken to be in [0, 255] already.
    return np.clip(array, 0, 255).astype(np.uint8)


def _convert(name, value, expect=None):
    """Returns (kind, converted value) or raises ValueError naming the key and shape."""
    array = _to_numpy(name, value)
    rank = array.ndim
    kind = {0: 'scalar', 2: 'image', 3: 'image', 4: 'video'}.get(rank)
    if kind is None:
        raise ValueError(f"Logger: value for '{name}' has shape {array.shape} (rank {rank}); "
                         'expected a scalar (rank 0), an image (rank 2 [H, W] or 3 [H, W, C]) '
                         'or a video (rank 4 [T, H, W, C]).')
    if expect is not None and kind != expect:
        raise ValueError(f"Logger.{expect}: value for '{name}' has shape {array.shape}, which is "
                         f'a {kind}, not a {expect}.')
    if kind == 'scalar':
        return kind, float(array)
    if rank == 2:
        array = array[:, :, None]
    channels = (1, 3, 4) if kind == 'image' else (1, 3)
    if array.shape[-1] not in channels or 0 in array.shape:
        raise ValueError(f"Logger: {kind} '{name}' has shape {array.shape}; expected "
                         f"{'[H, W, C]' if kind == 'image' else '[T, H, W, C]'} with C in "
                         f'{channels} and no empty axis.')
    # A copy, so that a caller mutating its buffer before write() does not change what is logged.
    return kind, np.array(_to_uint8(array), copy=True)


# ----------------------------------------------------------------------------------------------
# Logger


class Logger:
    """Collects values and sends them to every output on `write(step)`.

    `multiplier` scales the step passed to `write` (action_repeat turns agent steps into
    environment frames). `clock` (seconds, monotonic) is injectable for tests.
    """

    def __init__(self, outputs, multiplier=1, clock=time.monotonic):
        self._outputs = list(outputs)
        self._multiplier = multiplier
        self._clock = clock
        self._pending = []  # (name, value) in insertion order; repeated names are all kept
        self._rates = {}  # name -> (total, time) at the previous rate() call

    @property
    def outputs(self):
        return tuple(self._outputs)

    def add(self, mapping, prefix=None):
        """Records every value of `mapping` (names `<prefix>_<name>` when a prefix is given).

        All values are validated before any is recorded, so a bad one leaves nothing half-added.
        """
        items = mapping.items() if hasattr(mapping, 'items') else mapping
        converted = []
        for name, value in items:
            name = f'{prefix}_{name}' if prefix else str(name)
            converted.append((name, _convert(name, value)[1]))
        self._pending.extend(converted)

    def scalar(self, name, value):
        self._pending.append((name, _convert(name, value, 'scalar')[1]))

    def image(self, name, value):
        self._pending.append((name, _convert(name, value, 'image')[1]))

    def video(self, name, value):
        self._pending.append((name, _convert(name, value, 'video')[1]))

    def rate(self, name, total):
        """Adds scalar `name` = increase of the running `total` per wall second since the previous
        call with this name (e.g. updates per second). The first call only sets the baseline, so no
        misleading 0 is logged; so does a call with no elapsed time."""
        now = self._clock()
        previous = self._rates.get(name)
        self._rates[name] = (total, now)
        if previous is None:
            return None
        elapsed = now - previous[1]
        if elapsed <= 0:
            return None
        value = (total - previous[0]) / elapsed
        self._pending.append((name, float(value)))
        return value

    def write(self, step, fps=False):
        """Sends everything pending to every output at step `step * multiplier`, then clears it.

        With `fps=True`, adds scalar `fps` = frames (multiplied steps) since the previous fps write
        per wall second; skipped on the first such call. A no-op when nothing is pending.
        """
        step = int(int(step) * self._multiplier)
        if fps:
            self.rate('fps', step)
        if not self._pending:
            return
        records, self._pending = self._pending, []
        # Every output gets its chance even if one fails (a full disk under TensorBoard should not
        # also cost the JSONL line); the first error is re-raised afterwards.
        error = None
        for output in self._outputs:
            try:
                output.write(step, records)
            except Exception as e:  # noqa: BLE001 - re-raised below
                error = error or e
        if error is not None:
            raise error

    def close(self):
        for output in self._outputs:
            if hasattr(output, 'close'):
                output.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _scalars(records):
    """Scalar records as a dict; a name added twice in one write keeps its last value."""
    return {name: value for name, value in records if isinstance(value, float)}


# ----------------------------------------------------------------------------------------------
# Terminal


def format_number(value):
    """Compact number: 2 decimals with trailing zeros stripped for 0.01 < |v| < 10000, otherwise
    one-decimal scientific notation without '+' or leading exponent zeros (1.2e5, 3e-4)."""
    value = float(value)
    if value == 0:
        return '0'
    if not math.isfinite(value):
        return str(value)  # 'nan', 'inf', '-inf'
    if 0.01 < abs(value) < 10000:
        text = f'{value:.2f}'.rstrip('0').rstrip('.')
        return text
    mantissa, exponent = f'{value:.1e}'.split('e')
    if mantissa.endswith('.0'):
        mantissa = mantissa[:-2]
    return f'{mantissa}e{int(exponent)}'


class TerminalOutput:
    """Prints `[step] name value / name value ...` for the scalars whose name matches `pattern`
    (`re.search`), sorted by name. Writes without a matching scalar print nothing."""

    def __init__(self, pattern='.*', stream=None):
        self._pattern = re.compile(pattern)
        self._stream = stream  # None: sys.stdout at write time (so redirection is honoured)

    def format(self, step, records):
        scalars = _scalars(records)
        names = sorted(name for name in scalars if self._pattern.search(name))
        if not names:
            return None
        body = ' / '.join(f'{name} {format_number(scalars[name])}' for name in names)
        return f'[{step}] {body}'

    def write(self, step, records):
        line = self.format(step, records)
        if line is None:
            return
        stream = self._stream or sys.stdout
        break_progress_line()
        stream.write(line + '\n')
        stream.flush()


# ----------------------------------------------------------------------------------------------
# JSONL


class JSONLOutput:
    """Appends `{"step": step, name: value, ...}` (scalars only) per write to
    `<logdir>/<filename>`, flushed and fsync'd after each line.

    Each line goes out in a single write() call, so a crash can only leave a trailing partial line
    (never a torn line in the middle); such a line is removed when the file is opened again.
    """

    def __init__(self, logdir, filename='metrics.jsonl'):
        self._path = pathlib.Path(logdir) / filename
        self._path.parent.mkdir(parents=True, exist_ok=True)
        if self._path.exists():
            self._repair()

    @property
    def path(self):
        return self._path

    def _repair(self):
        with open(self._path, 'rb+') as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return
            end = _last_line_start(f, size)
            f.seek(end)
            tail = f.read()
            keep = end
            if tail.endswith(b'\n'):
                # A complete last line that still does not parse (e.g. NUL bytes after a power
                # loss) would break pandas just the same, so it goes too.
                try:
                    json.loads(tail)
                    keep = size
                except ValueError:
                    pass
            if keep == size:
                return
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
        logger.warning('JSONLOutput: removed a partial last line (%d bytes) from %s, left by an '
                       'interrupted write.', size - keep, self._path)

    def write(self, step, records):
        scalars = _scalars(records)
        if not scalars:
            return
        row = {'step': int(step)}
        for name, value in scalars.items():
            # Strict JSON has no NaN/Infinity (Python's bare `NaN` breaks other parsers), so
            # non-finite values are written as null; pandas reads null back as NaN.
            row[name] = value if math.isfinite(value) else None
        data = (json.dumps(row, allow_nan=False) + '\n').encode('utf-8')
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.lseek(fd, 0, os.SEEK_END)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError:
                # A full disk may take part of the line: cut it off so the file stays whole.
                try:
                    os.ftruncate(fd, size)
                except OSError:
                    pass
                raise
        finally:
            os.close(fd)


def _last_line_start(f, size, chunk=4096):
    """Offset just after the last newline before the final byte (0 if there is none): the start
    of the last line, complete or not."""
    position = size - 1  # the final byte may itself be the newline ending the last line
    while position > 0:
        start = max(0, position - chunk)
        f.seek(start)
        block = f.read(position - start)
        index = block.rfind(b'\n')
        if index >= 0:
            return start + index + 1
        position = start
    return 0


# ----------------------------------------------------------------------------------------------
# GIF encoding and TensorBoard


def encode_gif(frames, fps=20):
    """Encodes uint8 frames [T, H, W, C] (C = 1 or 3) as a looping animated GIF, returned as bytes.

    Grayscale is stored exactly. RGB uses one 256-colour palette for the whole clip (median cut
    over a sample of frames), which is ~15x faster than Pillow's per-frame adaptive palettes on
    this CPU and avoids palette flicker. Pillow merges identical consecutive frames into one
    longer frame, so a decoder may report fewer frames than T for static clips.
    """
    from PIL import Image  # deferred: only needed when a video is logged

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3) or frames.dtype != np.uint8:
        raise ValueError(f'encode_gif: expected uint8 [T, H, W, C] with C in (1, 3), got '
                         f'{frames.dtype} {frames.shape}.')
    # GIF delays are in centiseconds and browsers slow delays below 2 cs down to 10 cs.
    duration = max(20, int(round(1000 / fps)))
    if frames.shape[-1] == 1:
        images = [Image.fromarray(frame[:, :, 0], 'L') for frame in frames]
    else:
        palette = _palette(frames, Image)
        images = [Image.fromarray(frame, 'RGB').quantize(palette=palette, dither=Image.Dither.NONE)
                  for frame in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format='GIF', save_all=True, append_images=images[1:],
                   duration=duration, loop=0)
    return buffer.getvalue()


def _palette(frames, Image, max_frames=64, max_pixels=1 << 18):
    """A 'P' image carrying a median-cut palette of evenly spaced frames (pixels subsampled so
    that the sample stays under `max_pixels`, which bounds the cost for long or large clips)."""
    t, h, w, _ = frames.shape
    index = np.unique(np.linspace(0, t - 1, min(t, max_frames)).astype(int))
    stride = max(1, math.ceil(math.sqrt(len(index) * h * w / max_pixels)))
    sample = frames[index, ::stride, ::stride]
    mosaic = np.ascontiguousarray(sample.reshape(-1, sample.shape[2], 3))
    return Image.fromarray(mosaic, 'RGB').quantize(256, method=Image.Quantize.MEDIANCUT)


class TensorBoardOutput:
    """Writes scalars (under their names), images (image summaries) and videos (animated GIFs as
    raw image summaries, shown animated in TensorBoard's Images tab) to an event file in `logdir`.

    Uses its own writer inside `as_default`, which restores whatever default writer the caller had;
    summaries are forced on so that an enclosing `tf.summary.record_if(False)` does not drop them.
    """

    def __init__(self, logdir, fps=20, max_queue=1000, max_fallback_frames=16):
        import tensorflow as tf  # deferred: the rest of the module works without TensorFlow

        self._tf = tf
        self._fps = fps
        self._max_fallback_frames = max_fallback_frames
        self._logdir = str(logdir)
        self._writer = tf.summary.create_file_writer(self._logdir, max_queue=max_queue)

    def write(self, step, records):
        tf = self._tf
        with self._writer.as_default(), tf.summary.record_if(True):
            for name, value in records:
                if isinstance(value, float):
                    tf.summary.scalar(name, value, step=step)
                elif value.ndim == 3:
                    tf.summary.image(name, value[None], step=step)
                else:
                    self._video(name, value, step)
        self._writer.flush()

    def _video(self, name, frames, step):
        tf = self._tf
        try:
            gif = encode_gif(frames, self._fps)
        except Exception as e:  # noqa: BLE001 - any encoder failure falls back to still frames
            logger.warning("TensorBoardOutput: GIF encoding of '%s' %s failed (%s: %s); writing "
                           'frames as images instead.', name, frames.shape, type(e).__name__, e)
            count = min(len(frames), self._max_fallback_frames)
            index = np.linspace(0, len(frames) - 1, count).astype(int)
            tf.summary.image(name, frames[index], step=step, max_outputs=count)
            return
        from tensorflow.core.framework import summary_pb2

        _, height, width, channels = frames.shape
        image = summary_pb2.Summary.Image(height=height, width=width, colorspace=channels,
                                          encoded_image_string=gif)
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=name, image=image)])
        tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=step)

    def flush(self):
        self._writer.flush()

    def close(self):
        self._writer.close()


# ----------------------------------------------------------------------------------------------
# Progress line


_open_progress = None  # the ProgressLine whose carriage-return line is currently unterminated


def break_progress_line():
    """Ends an unterminated TTY progress line so that the next print starts on a fresh line.
    TerminalOutput calls it; call it before other prints that may interleave with a ProgressLine."""
    global _open_progress
    progress, _open_progress = _open_progress, None
    if progress is not None:
        progress._end_line()


def format_duration(seconds):
    """H:MM:SS (hours unbounded), or '?' when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return '?'
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f'{hours}:{minutes:02d}:{secs:02d}'


class ProgressLine:
    """Single-line progress display: step/total, percent, fps, updates/s, last return, ETA.

    On a TTY the line is redrawn in place with a carriage return (at most every `interval`
    seconds, default 0.2). Otherwise (log files, pipes) a normal line is printed at most every
    `interval` seconds (default 30), so logs stay readable. The first update and the one that
    reaches `total_steps` always print. ETA = remaining steps / rate, the rate measured over about
    the last `window` seconds so that it follows speed changes (e.g. prefill vs training).
    """

    def __init__(self, stream=None, interval=None, window=120.0, tty=None, clock=time.monotonic,
                 multiplier=None):
        self._stream = stream
        self._tty = tty
        self._interval = interval
        self._window = window
        self._clock = clock
        self._multiplier = multiplier  # frames per step: when set, fps comes from the step rate
        self._samples = collections.deque()  # (time, step, updates)
        self._last_print = None
        self._line_open = False
        self.rate = None  # steps per second over the recent window
        self.eta = None  # seconds

    def _stream_now(self):
        return self._stream or sys.stdout

    def _is_tty(self):
        if self._tty is not None:
            return self._tty
        try:
            return self._stream_now().isatty()
        except (AttributeError, ValueError):
            return False

    def update(self, step, total_steps, fps=None, ret=None, updates_per_sec=None, updates=None):
        """Records progress and prints when due; returns the formatted line. Without explicit
        `fps` / `updates_per_sec`, they are measured over the window from the step rate (times
        `multiplier`) and from the running total `updates`."""
        now = self._clock()
        step = int(step)
        if self._samples and step < self._samples[-1][1]:
            self._samples.clear()  # the counter went back (new run in the same process)
        self._samples.append((now, step, updates))
        # Keep the newest sample at or before the window start as the anchor, so the rate always
        # spans at least `window` seconds once that much history exists, even with rare updates.
        while len(self._samples) > 2 and self._samples[1][0] <= now - self._window:
            self._samples.popleft()
        t0, s0, u0 = self._samples[0]
        self.rate = (step - s0) / (now - t0) if now > t0 else None
        if fps is None and self._multiplier and self.rate is not None:
            fps = self.rate * self._multiplier
        if updates_per_sec is None and updates is not None and u0 is not None and now > t0:
            updates_per_sec = (updates - u0) / (now - t0)
        remaining = max(0, total_steps - step)
        if remaining == 0:
            self.eta = 0.0
        else:
            self.eta = remaining / self.rate if self.rate and self.rate > 0 else None
        line = self.format(step, total_steps, fps, ret, updates_per_sec)

        tty = self._is_tty()
        interval = self._interval if self._interval is not None else (0.2 if tty else 30.0)
        done = remaining == 0
        due = self._last_print is None or now - self._last_print >= interval or done
        if due:
            self._last_print = now
            self._print(line, tty, done)
        return line

    def format(self, step, total_steps, fps=None, ret=None, updates_per_sec=None):
        percent = 100.0 * step / total_steps if total_steps else 100.0
        parts = [f'step {step}/{int(total_steps)} ({percent:.1f}%)']
        if fps is not None:
            parts.append(f'fps {format_number(fps)}')
        if updates_per_sec is not None:
            parts.append(f'upd/s {format_number(updates_per_sec)}')
        if ret is not None:
            parts.append(f'return {format_number(ret)}')
        parts.append(f'ETA {format_duration(self.eta)}')
        return ' | '.join(parts)

    def _print(self, line, tty, done):
        global _open_progress
        stream = self._stream_now()
        if tty:
            # '\r' returns to column 0 and ESC[K clears what a longer previous line left behind.
            stream.write('\r' + line + '\x1b[K' + ('\n' if done else ''))
            self._line_open = not done
            _open_progress = self if self._line_open else None
        else:
            if _open_progress is not None:
                break_progress_line()
            stream.write(line + '\n')
        stream.flush()

    def _end_line(self):
        if self._line_open:
            self._line_open = False
            stream = self._stream_now()
            stream.write('\n')
            stream.flush()

    def close(self):
        """Terminates an open TTY line (call at the end of training)."""
        global _open_progress
        if _open_progress is self:
            _open_progress = None
        self._end_line()
