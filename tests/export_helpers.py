"""Shared by the export tests: one export of the tiny Atari run per test session (in every
format, so the SavedModel, ONNX and TFLite tests read the same files), and the optional packages
of the export extra, which must be installed: a missing one fails the test, it is not skipped."""

import fcntl
import importlib
import json
import os

import pytest

from conftest import ATARI_RUN_STEPS, run_module

FORMATS = ['savedmodel', 'onnx', 'tflite']
EXTRA = {'tf2onnx': 'tf2onnx', 'onnx': 'onnx', 'onnxruntime': 'onnxruntime',
         'ai_edge_litert': 'ai-edge-litert', 'tensorflow_serving': 'tensorflow-serving-api',
         'grpc': 'grpcio'}


def require_export_extra():
    """Fails (never skips) with the install command when a package of the extra is missing."""
    missing = []
    for module, package in EXTRA.items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(package)
    if missing:
        pytest.fail(f"the export extra is not installed (missing {', '.join(missing)}); run "
                    f'pip install -e ".[export]"', pytrace=False)


def shared_root(tmp_path_factory):
    root = tmp_path_factory.getbasetemp()
    return root.parent if os.environ.get('PYTEST_XDIST_WORKER') else root


def shared_export(atari_run, tmp_path_factory):
    """(model folder, version folder) of `python -m dreamerv2_tf.export --format savedmodel onnx
    tflite` on the shared tiny Atari run; the first worker exports, the others wait and read."""
    require_export_extra()
    logdir, code, output, _ = atari_run
    assert code == 0, output[-2000:]
    root = shared_root(tmp_path_factory)
    out, result = root / 'models' / 'pong', root / 'atari_export.json'
    with open(root / 'atari_export.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not result.exists():
            code, output, _ = run_module('dreamerv2_tf.export', [
                '--logdir', str(logdir), '--out', str(out), '--format', *FORMATS])
            result.write_text(json.dumps([code, output]))
    code, output = json.loads(result.read_text())
    assert code == 0, output[-3000:]
    return out, out / str(ATARI_RUN_STEPS)
