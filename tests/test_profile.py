"""The train step's FLOP count against a hand count for the tiny Atari config, and
`bench train --profile` writing a profiler trace and a breakdown whose total is that count."""

import pathlib
import re

import pytest

from dreamerv2_tf.agent import Agent
from dreamerv2_tf.benchmarks import profile

from conftest import make_config, make_spaces


def dense(fan_in, fan_out):
    return 2 * fan_in * fan_out


@pytest.fixture(scope='module')
def tiny_atari_agent():
    config = make_config('atari')
    obs_space, act_space = make_spaces(1, 6, True)
    return config, Agent(config, obs_space, act_space)


def test_step_flops_match_a_hand_count_of_the_tiny_atari_config(tiny_atari_agent):
    config, agent = tiny_atari_agent
    # The tiny block: 64x64x1 images, conv depth 4 (kernels 4, stride 2, valid), deconv kernels
    # 5 5 6 6, RSSM hidden 32, deter 32, 4 x 4 latents, heads 2 x 32, 6 actions, horizon 5.
    assert (config.encoder.cnn_depth, config.rssm.hidden, config.rssm.deter,
            config.rssm.stoch, config.rssm.discrete, config.imag_horizon) == (4, 32, 32, 4, 4, 5)
    batch, length, horizon = 3, 16, 5
    # Encoder: 64 -> 31 -> 14 -> 6 -> 2 pixels, channels 1 -> 4 -> 8 -> 16 -> 32.
    encoder = (2 * 16 * 1 * 4 * 31 * 31 + 2 * 16 * 4 * 8 * 14 * 14 + 2 * 16 * 8 * 16 * 6 * 6
               + 2 * 16 * 16 * 32 * 2 * 2)
    embed, feat = 32 * 2 * 2, 4 * 4 + 32
    # Decoder: Dense feat -> 128, then 1 -> 5 -> 13 -> 30 -> 64 pixels, channels 128 -> 16 -> 8
    # -> 4 -> 1; a transposed conv costs k*k*cin*cout per input pixel.
    decoder = (dense(feat, 128) + 2 * 25 * 128 * 16 * 1 + 2 * 25 * 16 * 8 * 5 * 5
               + 2 * 36 * 8 * 4 * 13 * 13 + 2 * 36 * 4 * 1 * 30 * 30)
    prior = dense(16 + 6, 32) + dense(32 + 32, 96) + dense(32, 32) + dense(32, 16)
    posterior = dense(32 + embed, 32) + dense(32, 16)
    scalar_head = dense(feat, 32) + dense(32, 32) + dense(32, 1)
    actor = dense(feat, 32) + dense(32, 32) + dense(32, 6)
    rows = batch * length
    forward = {
        'encoder': rows * encoder,
        'rssm_observe': rows * (prior + posterior),
        'decoder': rows * decoder,
        'heads': rows * 2 * scalar_head,  # reward and discount
        'imagination': horizon * rows * (actor + prior),
        'targets': (horizon + 1) * rows * 3 * scalar_head,  # reward, discount, slow critic
        # Atari's discrete actions use reinforce: the actor plus the slow critic as baseline.
        'actor': (horizon - 1) * rows * (actor + scalar_head),
        'critic': horizon * rows * scalar_head,
    }
    # Backward: one forward pass per gradient kind needed (inputs, weights). The world model
    # needs both; the critic and the actor read stopped features (weights only); reinforce
    # gradients stop at the log-probabilities, so the baseline, targets and rollout need none.
    backward = {k: 2 * forward[k] for k in ('encoder', 'rssm_observe', 'decoder', 'heads')}
    backward.update(critic=forward['critic'], actor=(horizon - 1) * rows * actor,
                    imagination=0, targets=0)
    expected = {k: (forward[k], backward[k]) for k in forward}
    assert profile.step_flops(agent, batch, length, horizon) == expected


def test_bench_train_profile_writes_a_trace_and_a_breakdown(tiny_atari_agent, tmp_path, capsys):
    from dreamerv2_tf.bench import main
    config, agent = tiny_atari_agent
    trace = tmp_path / 'trace'
    code = main(['train', '--configs', 'defaults', 'atari', 'tiny', '--steps', '1',
                 '--warmup', '1', '--profile', str(trace)])
    output = capsys.readouterr().out
    assert code == 0, output[-3000:]
    assert list(trace.rglob('*.xplane.pb')), sorted(p.name for p in trace.rglob('*'))
    # The table's step row carries the whole step's FLOPs (same config, same batch shape).
    total = sum(f + b for f, b in profile.step_flops(agent, 3, 16, 5).values())
    row = re.search(r'^\| \*\*step\*\* \| ([\d.]+) \| 100% \| ([\d.]+) \|', output, re.M)
    assert row, output[-3000:]
    assert float(row.group(2)) == pytest.approx(total / 1e9, abs=0.005)
    names = re.findall(r'^\| (\w+) \| [\d.]+ \|', output, re.M)
    assert names == list(profile.TIMED_FLOPS), names
    peak = re.search(r'matmul peak ([\d.]+) GFLOP/s', output)
    assert peak and float(peak.group(1)) > 0
    assert pathlib.Path(trace).is_dir()
