import pytest
import tensorflow as tf

from dreamerv2_tf import schedules


@pytest.mark.parametrize('text, step, expected', [
    ('0.003', 123, 0.003),
    (2e-3, 5, 2e-3),
    ('linear(3e-3,3e-4,2.5e6)', 0, 3e-3),
    ('linear(3e-3,3e-4,2.5e6)', 1.25e6, (3e-3 + 3e-4) / 2),
    ('linear(3e-3,3e-4,2.5e6)', 1e7, 3e-4),  # clipped after the duration
    ('warmup(100,0.5)', 25, 0.125),
    ('warmup(100,0.5)', 1000, 0.5),
    ('exp(1,0,10)', 20, 0.25),  # two half-lives
    ('exp(4,2,5)', 5, 3.0),
    ('horizon(10,100,100)', 0, 0.9),  # 1 - 1/10
    ('horizon(10,100,100)', 50, 1 - 1 / 55),
])
def test_schedule_values_by_hand(text, step, expected):
    value = schedules.value(text, tf.constant(int(step), tf.int64))
    assert value.dtype == tf.float32
    assert float(value) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize('text, message', [
    ('lin(1,2,3)', 'not a number or a schedule'),
    ('linear(1,2)', 'takes 3 arguments, got 2'),
    ('linear(1,x,3)', 'non-numeric argument'),
])
def test_bad_schedules_are_rejected(text, message):
    with pytest.raises(ValueError, match=message):
        schedules.parse(text)
