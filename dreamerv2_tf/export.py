"""Exports the policy (encoder, RSSM posterior step, actor) as a SavedModel for TF Serving, and
as ONNX and LiteRT (TFLite) models for runtimes without TensorFlow.

    python -m dreamerv2_tf.export --logdir runs/pong --out export/models/pong [--version N]
                                  [--format savedmodel onnx tflite]

Writes `<out>/<version>/` (TF Serving's layout; version defaults to the checkpoint's step and is
never overwritten): the SavedModel (`savedmodel`, the default), `policy.onnx` (`onnx`, run by
onnxruntime) and `policy.tflite` (`tflite`, built-in ops, run by ai-edge-litert), the last two
with `policy.json` beside them. SavedModel signatures, all with a free batch dimension B:

  initial_state(batch_size int32 [])          -> the zero state tensors
  serving_default(<obs keys>, is_first, <state>, seed) -> action, [action_index], <new state>
                                                 deterministic (eval) actions
  sample(<same inputs>)                       -> the same outputs with sampled (train) actions
  metadata()                                  -> config, step, task, spaces and specs as strings
  core(<obs keys>, is_first, deter, stoch, prev_action, latent_noise[, action_noise])
                                              -> action, next_deter, next_stoch

Observation inputs are the keys the encoder reads (e.g. `image` uint8 [B, 64, 64, C]); state
inputs and outputs are float32: `deter`, `stoch`, `logit` (or `mean`, `std`) and `prev_action`.
`seed` is int64 [2]: it drives the sampled parts (the latent state unless `eval_state_mean`, and
the action in `sample`), so the same inputs and seed give the same outputs, e.g. [run, step].
The exported graph computes in float32 unless `--precision 16`. Loading needs TensorFlow only.

`core` is the policy step with its random draws as inputs (no random ops), which `policy.onnx`
and `policy.tflite` hold too: uniform noise in (0, 1) for discrete latents and actions, turned
into Gumbel-max samples, standard normal noise for continuous ones; exp(-1) (uniform) or 0
(normal) gives the mode, i.e. the eval action. Its state is flat float32: deter [B, D], stoch
[B, latents * classes], prev_action [B, A] (the action taken); `policy.json` lists the shapes,
the noise and how to draw it. `dreamerv2_tf.serving.portable` runs the files without TensorFlow.
ONNX and TFLite need the export extra (pip install -e ".[export]") and float32.
"""

import argparse
import pathlib
import sys

from dreamerv2_tf.serving.load import load_config, restore_networks
from dreamerv2_tf.serving.policy_module import FORMATS, export_agent, export_config

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
    parser.add_argument('--format', nargs='+', choices=FORMATS, default=['savedmodel'],
                        help='what to write, several allowed (default savedmodel)')
    args = parser.parse_args(argv)
    if args.precision != 32 and set(args.format) - {'savedmodel'}:
        parser.error('onnx and tflite exports compute in float32; use --precision 32')
    return args


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
        path = export_agent(agent, config, out, version, step, args.format)
    except (FileExistsError, ImportError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    written = {'savedmodel': 'SavedModel (signatures serving_default, sample, initial_state, '
                             'metadata, core)',
               'onnx': 'policy.onnx', 'tflite': 'policy.tflite'}
    print(f"Wrote {path}: {', '.join(written[f] for f in FORMATS if f in args.format)}.")
    return 0


if __name__ == '__main__':
    sys.exit(main())
