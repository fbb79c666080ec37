"""The exported policy (encoder, RSSM posterior step, actor) as a `tf.Module` whose signatures
TF Serving runs, and its atomic, versioned save. See `python -m dreamerv2_tf.export --help` for
the signatures."""

import json
import logging
import pathlib
import shutil

import tensorflow as tf

from dreamerv2_tf.serving.core import SIGNATURE, PolicyCore, core_metadata, describe

logger = logging.getLogger(__name__)

STATE_ACTION = 'prev_action'
EXTRA_DIR = 'assets.extra'  # TF Serving's place for files beside a SavedModel
FORMATS = ('savedmodel', 'onnx', 'tflite')
CORE_METADATA = 'policy.json'  # the core's layout, beside every export of it


def obs_specs(policy):
    encoder = policy.encoder
    specs = {}
    for key in encoder.cnn_keys + encoder.mlp_keys:
        space = policy.obs_space[key]
        specs[key] = tf.TensorSpec([None, *space.shape], tf.as_dtype(space.dtype), name=key)
    specs['is_first'] = tf.TensorSpec([None], tf.bool, name='is_first')
    return specs


def state_specs(policy):
    latent, action = policy.initial_state(1)
    specs = {k: tf.TensorSpec([None, *v.shape[1:]], tf.float32, name=k) for k, v in latent.items()}
    specs[STATE_ACTION] = tf.TensorSpec([None, *action.shape[1:]], tf.float32, name=STATE_ACTION)
    return specs


class PolicyModule:
    """Builds the exported `tf.Module`: signature functions that close over the networks of a
    `dreamerv2_tf.agent.policy.Policy` (encoder, RSSM and actor; no training head or optimizer).

    The module holds only the captured variables and the functions, no Keras or Python objects,
    so loading needs TensorFlow alone. It lists the raw variables explicitly so that TF1-style
    loaders (TF Serving, `saved_model_cli run`) can restore them."""

    def __init__(self, policy, config, step):
        self.policy = policy
        self.discrete = policy.act_space['action'].discrete
        self.obs = obs_specs(policy)
        self.state = state_specs(policy)
        seed = tf.TensorSpec([2], tf.int64, name='seed')
        inputs = {**self.obs, **self.state, 'seed': seed}
        metadata = self.metadata(config, step)
        self.metadata_values = metadata

        module = tf.Module()
        module.serving_default = tf.function(lambda x: self._step(x, 'eval'),
                                             input_signature=[inputs])
        module.sample = tf.function(lambda x: self._step(x, 'train'), input_signature=[inputs])
        module.initial_state = tf.function(
            self._initial_state, input_signature=[tf.TensorSpec([], tf.int32, name='batch_size')])
        constants = {k: tf.constant(v, tf.int64 if isinstance(v, int) else None)
                     for k, v in metadata.items()}
        module.metadata = tf.function(lambda: dict(constants), input_signature=[])
        self.signatures = {
            'serving_default': module.serving_default.get_concrete_function(),
            'sample': module.sample.get_concrete_function(),
            'initial_state': module.initial_state.get_concrete_function(),
            'metadata': module.metadata.get_concrete_function(),
        }
        # The deterministic core (draws as inputs) that ONNX and LiteRT exports convert; float32
        # graphs only.
        self.core = PolicyCore(policy) if policy.precision == 32 else None
        if self.core is not None:
            module.core = tf.function(self.core, input_signature=[self.core.specs])
            self.signatures[SIGNATURE] = module.core.get_concrete_function()
            self.core_metadata = core_metadata(self.core, config, step)
        variables = {id(v): v for fn in self.signatures.values() for v in fn.variables}
        module.captured_tf_variables = list(variables.values())
        self.module = module

    def _check(self, inputs):
        """In-graph shape checks, so that every caller (TF Serving and `saved_model_cli`
        included, which do not check shapes against the signature) gets an error naming the
        input: each input's shape, and one batch size for all."""
        specs = {**self.obs, **self.state}
        batch = tf.shape(inputs['is_first'])[0]
        checks = []
        for key, spec in specs.items():
            shape = tf.shape(inputs[key])
            expected = 'B' + ''.join(f', {d}' for d in spec.shape[1:])
            checks.append(tf.debugging.assert_equal(
                tf.size(shape), len(spec.shape),
                message=f"input '{key}' must have shape [{expected}]"))
            if spec.shape.rank > 1:
                checks.append(tf.debugging.assert_equal(
                    shape[1:], tf.constant(spec.shape[1:].as_list(), tf.int32),
                    message=f"input '{key}' must have shape [{expected}]"))
            checks.append(tf.debugging.assert_equal(
                shape[0], batch, message=f"input '{key}' has another batch size than 'is_first'"))
        with tf.control_dependencies(checks):
            return {k: tf.identity(v) for k, v in inputs.items()}

    def _step(self, inputs, mode):
        inputs = self._check(inputs)
        dtype = self.policy.rssm.compute_dtype
        obs = {k: inputs[k] for k in self.obs}
        latent = {k: tf.cast(inputs[k], dtype) for k in self.state if k != STATE_ACTION}
        outputs, (latent, action) = self.policy.step(
            obs, (latent, inputs[STATE_ACTION]), mode, inputs['seed'])
        result = {'action': tf.cast(outputs['action'], tf.float32)}
        if self.discrete:
            result['action_index'] = tf.argmax(result['action'], -1)
        result.update({k: tf.cast(v, tf.float32) for k, v in latent.items()})
        result[STATE_ACTION] = tf.cast(action, tf.float32)
        return result

    def _initial_state(self, batch_size):
        latent, action = self.policy.initial_state(batch_size)
        state = {k: tf.cast(v, tf.float32) for k, v in latent.items()}
        state[STATE_ACTION] = action
        return state

    def metadata(self, config, step):
        from dreamerv2_tf import config as configlib
        space = self.policy.act_space['action']
        action = {'discrete': space.discrete, 'shape': list(space.shape),
                  'dtype': space.dtype.name, 'low': space.low.tolist(),
                  'high': space.high.tolist()}
        return {
            'config': configlib.dump_yaml(config.to_dict()),
            'step': int(step),
            'task': config.task,
            'precision': int(self.policy.precision),  # resolved (auto -> 16 or 32)
            'action_space': json.dumps(action),
            'observation_spec': json.dumps({k: describe(v) for k, v in self.obs.items()}),
            'state_spec': json.dumps({k: describe(v) for k, v in self.state.items()}),
        }

    def save(self, directory, formats=('savedmodel',)):
        """Writes the SavedModel (`savedmodel`) and/or the core as `policy.onnx` and
        `policy.tflite` with their `policy.json` into `directory`. The TFLite converter reads a
        SavedModel, so one is written to a scratch folder when `savedmodel` is not asked for."""
        directory = pathlib.Path(directory)
        unknown = sorted(set(formats) - set(FORMATS))
        if unknown:
            raise ValueError(f"unknown export format '{unknown[0]}'; use {', '.join(FORMATS)}")
        portable = [f for f in FORMATS[1:] if f in formats]
        if portable and self.core is None:
            raise ValueError('onnx and tflite exports compute in float32; export them with '
                             '--precision 32')
        saved = directory if 'savedmodel' in formats else directory / '.savedmodel'
        tf.saved_model.save(self.module, str(saved), signatures=self.signatures)
        extra = saved / EXTRA_DIR
        extra.mkdir(exist_ok=True)
        (extra / 'metadata.json').write_text(json.dumps(self.metadata_values, indent=2))
        if self.core is not None:
            (extra / CORE_METADATA).write_text(json.dumps(self.core_metadata, indent=2))
        if not portable:
            return
        from dreamerv2_tf.serving import convert
        (directory / CORE_METADATA).write_text(json.dumps(self.core_metadata, indent=2))
        if 'onnx' in portable:
            convert.to_onnx(self.core, self.core_metadata, directory / convert.ONNX_FILE)
        if 'tflite' in portable:
            convert.to_tflite(saved, directory / convert.TFLITE_FILE)
        if saved != directory:
            shutil.rmtree(saved)


def save_version(module, out, version, formats=('savedmodel',)):
    """Writes `<out>/<version>` through a temporary folder (TF Serving polls `out` and must
    never see a half-written version). Refuses to overwrite an existing version."""
    out = pathlib.Path(out)
    final = out / str(int(version))
    if final.exists():
        raise FileExistsError(f'{final} exists; versions are never overwritten (use --version)')
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f'.tmp-{int(version)}'  # not a number: TF Serving ignores it
    if tmp.exists():
        shutil.rmtree(tmp)
    module.save(tmp, formats)
    tmp.rename(final)
    return final


def export_agent(agent, config, out, version, step, formats=('savedmodel',)):
    return save_version(PolicyModule(agent.acting, config, step), out, version, formats)


def export_config(config, precision):
    """The config an exported graph is built with: float32 unless asked for float16."""
    return config.update(precision=precision, jit=True)


def export_from_training(agent, config, logdir, step):
    """Called by the training loop every `export_every` steps: writes <logdir>/export/<step>
    in float32. A mixed-precision run exports a float32 copy of the encoder, RSSM and actor only."""
    from dreamerv2_tf.agent.policy import float32_copy
    from dreamerv2_tf.agent.world_model import preprocess
    policy = agent.acting
    if policy.precision != 32:
        policy = float32_copy(policy, lambda obs: preprocess(obs, config, tf.float32))
        # The policy's step is the same in float32; its config records the exported precision.
    module = PolicyModule(policy, config.update(precision=32), step)
    path = save_version(module, pathlib.Path(logdir) / 'export', step)
    logger.info('Exported the policy to %s.', path)
    return path
