"""Data-parallel training with tf.distribute (issue 10). Two logical CPU devices need a fresh
process (TensorFlow fixes its devices when it starts), so the numbers come from
tests/distribute_child.py, run once; every subprocess has a timeout so a hang fails."""

import json
import os
import re
import subprocess
import sys

import pytest

from dreamerv2_tf import config as configlib
from dreamerv2_tf.run import distribute

from conftest import ATARI_TINY, command_env, run_module

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope='module')
def child():
    result = subprocess.run([sys.executable, os.path.join(HERE, 'distribute_child.py')],
                            capture_output=True, text=True, timeout=900, env=command_env())
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_two_replicas_of_batch_b_train_like_one_device_with_batch_2b(child):
    result = child['equivalence']
    assert result['start'] == 0.0  # the same initial weights
    # Every world-model, actor and critic loss, after 1 and after 20 updates.
    assert {'model_loss', 'kl_loss', 'image_loss', 'reward_loss', 'discount_loss',
            'actor_loss', 'critic_loss'} <= set(result['loss_names'])
    assert max(result['losses'][0].values()) < 1e-5, result['losses'][0]
    assert result['weights'][0] < 1e-5
    assert max(max(losses.values()) for losses in result['losses']) < 1e-4
    assert max(result['weights']) < 1e-4, result['weights']
    assert max(result['state']) < 1e-4  # the carried RSSM state: rows of the same batch
    # The replicas never drift apart, slow critic and optimizer moments included.
    assert all(result['replicas_equal'])
    assert result['updates'] == 20


def test_replicated_optimizer_matches_one_device_and_skips_overflow_everywhere(child):
    result = child['optimizer']
    assert result['finite_weights'] < 1e-6 and result['finite_norm'] < 1e-6
    # One replica's gradient overflows: the all-reduced gradient is not finite, so both
    # replicas skip the step (no weight, moment or iteration change) and halve the scale.
    assert not result['skip_norm_finite']
    assert result['skip_weights_unchanged']
    assert sorted(n.split('/')[-1] for n in result['skip_changed_state']) == [
        'dynamic_scale', 'step_counter']
    assert result['scale_after'] == result['scale_before'] / 2
    assert result['replicas_equal']


@pytest.mark.parametrize('direction', ['2_to_1', '1_to_2'])
def test_checkpoints_restore_across_replica_counts(child, direction):
    result = child['equivalence']['portable'][direction]
    assert result['keys_equal']
    assert result['differed_before'] > 10  # the restore had something to do
    assert result['mismatched'] == []
    assert result['step'] == (1234 if direction == '2_to_1' else 4321)


def test_a_two_replica_run_resumes_on_one_device_and_continues_the_step_count(tmp_path):
    flags = [*ATARI_TINY, '--logdir', str(tmp_path), '--prefill', '100', '--time_limit', '100',
             '--eval_eps', '0', '--train_every', '10', '--log_every', '100']
    code, out, _ = run_module('dreamerv2_tf.train', [
        *flags, '--steps', '250', '--distribute', 'mirrored',
        '--distribute_devices', '/cpu:0,/cpu:1'], timeout=900)
    assert code == 0, out[-3000:]
    assert 'Distribute mirrored: 2 replica(s) x batch 3 = global batch 6.' in out
    assert 'Training finished at step 250.' in out
    code, out, _ = run_module('dreamerv2_tf.train', [*flags, '--steps', '350'], timeout=900)
    assert code == 0, out[-3000:]
    resumed = re.search(r'Resumed from \S+ at step (\d+) \((\d+) updates\)', out)
    assert resumed and int(resumed.group(1)) == 250 and int(resumed.group(2)) > 10, out[-2000:]
    assert 'Training finished at step 350.' in out
    rows = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
    updates = [row['updates'] for row in rows if 'updates' in row]
    assert updates == sorted(updates) and updates[-1] > int(resumed.group(2))


def test_distribute_settings_are_checked():
    def parse(*flags):
        return configlib.from_argv(['--configs', 'defaults', *flags])

    assert parse().distribute == 'none'
    assert parse('--distribute', 'mirrored', '--distribute_devices', 'gpu:0,/gpu:1')
    for flags, words in [
            (['--distribute', 'mirored'], 'mirrored'),
            (['--distribute_devices', '/gpu:0'], 'needs --distribute mirrored'),
            (['--distribute', 'mirrored', '--distribute_devices', 'gpu0'], "'gpu0'"),
            (['--distribute_timeout', '0'], 'positive')]:
        with pytest.raises(configlib.ConfigError, match=words):
            parse(*flags)
    assert distribute.parse_devices('gpu:0, /cpu:1') == ['/gpu:0', '/cpu:1']


def test_cluster_from_tf_config():
    spec = {'cluster': {'worker': ['127.0.0.1:1', '127.0.0.1:2', '127.0.0.1:3']},
            'task': {'type': 'worker', 'index': 2}}
    assert distribute.cluster_info({'TF_CONFIG': json.dumps(spec)}) == (2, 3)
    assert distribute.cluster_info({}) == (0, 1)
    spec['task']['index'] = 3
    with pytest.raises(distribute.DistributeError, match='not one of the 3 workers'):
        distribute.cluster_info({'TF_CONFIG': json.dumps(spec)})
    with pytest.raises(distribute.DistributeError, match='cluster spec'):
        distribute.cluster_info({'TF_CONFIG': '{"cluster": {}}'})


def test_multiworker_without_tf_config_is_a_one_line_error(tmp_path):
    env = dict(command_env())
    env.pop('TF_CONFIG', None)
    result = subprocess.run(
        [sys.executable, '-m', 'dreamerv2_tf.train', *ATARI_TINY, '--logdir', str(tmp_path),
         '--distribute', 'multiworker'], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        'error: distribute multiworker needs TF_CONFIG')


def test_a_lost_peer_is_named_not_this_worker():
    import tensorflow as tf
    # The shape of the error CI saw on worker 0: its own device comes first, in the op's name.
    message = ('{{function_node __wrapped__CollectiveReduceV2_device_/job:worker/replica:0/task:0/'
               'device:CPU:0}} Collective ops is aborted by: Error reported from '
               '/job:worker/task:1: The following tasks are unhealthy '
               '(stopped sending heartbeats):\n'
               '/job:worker/replica:0/task:1\n')
    error = tf.errors.UnavailableError(None, None, message)
    assert 'lost worker 1 of the cluster' in str(distribute.describe_failure(error, own_index=0))
    on_worker1 = message.replace('task:0', 'task:X').replace('task:1', 'task:0')
    on_worker1 = on_worker1.replace('task:X', 'task:1')
    error = tf.errors.UnavailableError(None, None, on_worker1)
    assert 'lost worker 0 of the cluster' in str(distribute.describe_failure(error, own_index=1))
    error = tf.errors.UnavailableError(None, None, 'the connection was reset')
    assert 'lost another worker' in str(distribute.describe_failure(error, own_index=0))
    assert distribute.describe_failure(ValueError(message), own_index=0) is None
