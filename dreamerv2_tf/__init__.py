"""dreamerv2_tf: DreamerV2 on TensorFlow 2 and Keras 3.

Importing the package does not import TensorFlow; environment workers rely on that. The process
defaults below must be set before TensorFlow loads, so they live here.
"""

import os

# oneDNN kernels make convolutions 3-4x faster on the AMD CPUs we measured, where TF leaves them off.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
# Hide TF's C++ info lines (CUDA probing on CPU-only machines); warnings and errors still show.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')
# Headless MuJoCo rendering through EGL (Mesa llvmpipe works without a GPU or display).
os.environ.setdefault('MUJOCO_GL', 'egl')

__version__ = '0.1.0'


def __getattr__(name):
    # Heavy entry points load on first use so that `import dreamerv2_tf` stays cheap.
    if name == 'train':  # the submodule, callable as train(env, config)
        import importlib
        return importlib.import_module('dreamerv2_tf.train')
    if name in ('Config', 'ConfigError'):
        from dreamerv2_tf import config
        return getattr(config, name)
    raise AttributeError(f"module 'dreamerv2_tf' has no attribute '{name}'")
