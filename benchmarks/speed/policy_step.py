"""Batch-1 eval policy step of the dreamerv2_tf first on sys.path, and what bounds it from below.

Exports a SavedModel of a fresh full-size agent with that code and times both with its own
`bench policy` (batch 1, as `python -m dreamerv2_tf.bench policy --saved-model ...`), which
prints the median milliseconds of `agent.policy` in-process and of the SavedModel's
`serving_default`. With --floor, in the same process and with the same timer: reading every
weight the exported policy holds once (a sum per tensor), its dense layers alone as batch-1
matmuls, and an empty `tf.function` call. It uses only APIs that every commit since the policy
export has (Agent, export_agent, and bench's parse, spaces_of, bench_policy and time_calls), so
an old commit is timed by putting its checkout first on the path:

    PYTHONPATH=<old checkout> python benchmarks/speed/policy_step.py atari
    PYTHONPATH=. python benchmarks/speed/policy_step.py atari --floor

Alternate the two a few times: a ratio from one run on one machine is the figure to quote.
"""

import argparse
import os
import subprocess
import tempfile

import numpy as np


def code_version(package_file):
    """The commit of the checkout the package was imported from (its folder if not a checkout)."""
    folder = os.path.dirname(os.path.dirname(os.path.abspath(package_file)))
    try:
        return 'commit ' + subprocess.run(['git', '-C', folder, 'rev-parse', '--short', 'HEAD'],
                                          capture_output=True, text=True,
                                          check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return folder


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('suite', nargs='?', default='atari', help='config block after defaults')
    parser.add_argument('--calls', type=int, default=200, help='timed calls of each')
    parser.add_argument('--floor', action='store_true', help='also time the lower bounds')
    args = parser.parse_args()

    import tensorflow as tf
    import dreamerv2_tf
    from dreamerv2_tf import bench, config as configlib
    from dreamerv2_tf.agent import Agent
    from dreamerv2_tf.serving.policy_module import export_agent

    print(f'{code_version(dreamerv2_tf.__file__)}, {args.suite}:', flush=True)
    config = configlib.compose(['defaults', args.suite]).update(precision=32)
    agent = Agent(config, *bench.spaces_of(config))
    with tempfile.TemporaryDirectory() as scratch:
        # Fresh weights (latency does not depend on training), exported by this same code; its
        # own `bench policy` then times the agent and the SavedModel.
        path = export_agent(agent, config, scratch, 1, 0)
        options, _ = bench.parse(['policy', '--batch', '1', '--calls', str(args.calls),
                                  '--saved-model', str(path)])
        options.warmup = 2 if options.warmup is None else options.warmup  # as bench.main
        bench.bench_policy(agent, config, options)
        variables = list(tf.saved_model.load(str(path)).captured_tf_variables)
    if not args.floor:
        return
    weights = sum(int(np.prod(v.shape)) * v.dtype.size for v in variables)
    read = tf.function(lambda: tf.add_n([tf.reduce_sum(v) for v in variables]))
    kernels = [v for v in variables if len(v.shape) == 2]
    vectors = [tf.random.normal([1, int(k.shape[0])]) for k in kernels]
    matmuls = tf.function(lambda: tf.add_n(
        [tf.reduce_sum(tf.matmul(x, k)) for x, k in zip(vectors, kernels)]))
    empty = tf.function(lambda x: x + 1)
    zero = tf.zeros([1])

    def ms(run):  # bench's own timer: a median over --calls calls after its warm-up
        return 1000 * bench.time_calls(lambda state: (run().numpy(), state)[1], None, options)

    once, dense, call = ms(read), ms(matmuls), ms(lambda: empty(zero))
    print(f'floor: the policy reads {weights / 2**20:.1f} MiB of weights; reading them once '
          f'{once:.3f} ms, its dense layers as batch-1 matmuls {dense:.3f} ms, an empty '
          f'tf.function call {call:.3f} ms')


if __name__ == '__main__':
    main()
