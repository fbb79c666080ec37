"""Exports the policy (encoder, RSSM posterior step, actor) as a SavedModel for TF Serving.

    python -m dreamerv2_tf.export --logdir runs/pong --out export/models/pong [--version N]

Writes `<out>/<version>/` (TF Serving's layout; version defaults to the checkpoint's step and is
never overwritten). Signatures, all with a free batch dimension B:

  initial_state(batch_size int32 [])          -> the zero state tensors
  serving_default(<obs keys>, is_first, <state>, seed) -> action, [action_index], <new state>
                                                 deterministic (eval) actions
  sample(<same inputs>)                       -> the same outputs with sampled (train) actions
  metadata()                                  -> config, step, task, spaces and specs as strings

Observation inputs are the keys the encoder reads (e.g. `image` uint8 [B, 64, 64, C]); state
inputs and outputs are float32: `deter`, `stoch`, `logit` (or `mean`, `std`) and `prev_action`.
`seed` is int64 [2]: it drives the sampled parts (the latent state unless `eval_state_mean`, and
the action in `sample`), so the same inputs and seed give the same outputs, e.g. [run, step].
The exported graph computes in float32 unless `--precision 16`. Loading needs TensorFlow only.
"""

import argparse
import pathlib
import sys

from dreamerv2_tf.serving.load import load_config, restore_networks
from dreamerv2_tf.serving.policy_module import export_agent, export_config

# Command line ------------------------------------------------------------------------------------

def parse(argv):
    parser = argparse.ArgumentParser(
        prog='python -m dreamerv2_tf.export', description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split('\n\n', 1)[1])
    parser.add_argument('--logdir', required=True, help='training logdir with checkpoints')
    parser.add_argument('--out', help='model folder holding versions (default <logdir>/export)')
    parser.add_argument('--version', type=int, help="version number (default: the checkpoint's "
                        'agent step)')
    parser.add_argument('--precision', type=int, choices=(32, 16), default=32,
                        help='compute precision of the exported graph (default 32; 16 keeps '
                             'mixed float16 for GPU serving)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    logdir = pathlib.Path(args.logdir).expanduser()
    try:
        config = load_config(logdir)
    except ValueError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    from dreamerv2_tf import envs
    from dreamerv2_tf.agent import Agent

    config = export_config(config, args.precision)
    env = envs.make_env(config, 'eval')
    obs_space, act_space = env.obs_space, env.act_space
    env.close()
    agent = Agent(config, obs_space, act_space)
    try:
        checkpoint = restore_networks(agent, logdir / 'checkpoints')
    except ValueError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    step = int(agent.step.numpy())
    version = args.version if args.version is not None else step
    out = pathlib.Path(args.out).expanduser() if args.out else logdir / 'export'
    print(f'Exporting {checkpoint} (step {step}) in float{args.precision}...', flush=True)
    try:
        path = export_agent(agent, config, out, version, step)
    except FileExistsError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(f'Wrote {path}. Signatures: serving_default, sample, initial_state, metadata.')
    return 0


if __name__ == '__main__':
    sys.exit(main())
