"""Hyperparameter schedules of spec 9.7: a number, or `linear(a,b,d)`, `warmup(w,v)`, `exp(a,b,h)`,
`horizon(a,b,d)` evaluated at the agent step.

`parse` is pure Python so that the config system can validate schedule strings without importing
TensorFlow; `value` evaluates a schedule on a (tensor or Python) step.
"""

import re

ARITY = {'linear': 3, 'warmup': 2, 'exp': 3, 'horizon': 3}
_PATTERN = re.compile(r'^\s*(\w+)\s*\((.*)\)\s*$')


def parse(text):
    """Returns (kind, args) for a schedule string, or ('constant', (value,)); raises ValueError."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return 'constant', (float(text),)
    try:
        return 'constant', (float(text),)
    except ValueError:
        pass
    match = _PATTERN.match(str(text))
    if not match or match.group(1) not in ARITY:
        raise ValueError(
            f"'{text}' is not a number or a schedule; use one of "
            "linear(a,b,d), warmup(w,v), exp(a,b,h), horizon(a,b,d)")
    kind = match.group(1)
    try:
        args = tuple(float(x) for x in match.group(2).split(','))
    except ValueError:
        raise ValueError(f"schedule '{text}' has a non-numeric argument") from None
    if len(args) != ARITY[kind]:
        raise ValueError(f"schedule '{text}' takes {ARITY[kind]} arguments, got {len(args)}")
    return kind, args


def value(text, step):
    """The schedule's value at `step` (float32 tensor if `step` is a tensor)."""
    import tensorflow as tf  # deferred: parse() must stay importable without TensorFlow

    kind, args = parse(text)
    if kind == 'constant':
        return tf.constant(args[0], tf.float32)
    step = tf.cast(step, tf.float32)

    def ramp(duration):
        return tf.clip_by_value(step / duration, 0.0, 1.0)

    if kind == 'linear':
        start, end, duration = args
        mix = ramp(duration)
        return (1 - mix) * start + mix * end
    if kind == 'warmup':
        duration, target = args
        return ramp(duration) * target
    if kind == 'exp':
        start, end, halflife = args
        return (start - end) * 0.5 ** (step / halflife) + end
    start, end, duration = args  # horizon: interpolate the horizon, return its discount
    mix = ramp(duration)
    horizon = (1 - mix) * start + mix * end
    return 1 - 1 / horizon
