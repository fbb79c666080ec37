"""The `tf.distribute` strategy of a run, from the config keys `distribute`,
`distribute_devices` and `distribute_timeout` (and `TF_CONFIG` for several machines).

    none         no strategy: one device, the code path of a run without tf.distribute
    mirrored     MirroredStrategy over all local GPUs, or the devices in `distribute_devices`
                 (`/cpu:0,/cpu:1` splits the CPU into logical devices: for tests and benchmarks)
    multiworker  MultiWorkerMirroredStrategy over the cluster that `TF_CONFIG` describes; the
                 workers send heartbeats to the chief's coordination service, and one that
                 stays silent for `distribute_timeout` seconds (crashed, unreachable) stops the
                 others with an error naming it; a
                 collective waiting longer than `distribute_collective_timeout` fails too (a
                 live but stuck worker). The collective timeout must exceed the longest time
                 one worker may run ahead of another: an evaluation, a checkpoint, a first trace.

`make_strategy` must run before TensorFlow initialises its devices (before the first op), so
that logical CPUs and the collective settings can still be configured.
"""

import json
import os
import re


class DistributeError(ValueError):
    """A bad distribution setting (TF_CONFIG, devices); the message is one line for the user."""


class WorkerLost(RuntimeError):
    """A collective failed because a worker of the cluster is gone (crashed or unreachable)."""


def cluster_info(environ=None):
    """(worker index, worker count) from `TF_CONFIG`; (0, 1) without it. Worker 0 is the chief
    (this package does not use a separate `chief` job)."""
    text = (environ if environ is not None else os.environ).get('TF_CONFIG', '')
    if not text:
        return 0, 1
    try:
        spec = json.loads(text)
        workers = spec['cluster']['worker']
        task = spec['task']
        index = int(task['index'])
    except (ValueError, KeyError, TypeError) as e:
        raise DistributeError(f'TF_CONFIG is not a cluster spec with cluster.worker and task.index '
                          f'({type(e).__name__}: {e})') from None
    if set(spec['cluster']) - {'worker'} or task.get('type', 'worker') != 'worker':
        raise DistributeError("TF_CONFIG: only a 'worker' job is supported (worker 0 is the chief)")
    if not 0 <= index < len(workers):
        raise DistributeError(f'TF_CONFIG: task.index {index} is not one of the '
                          f'{len(workers)} workers')
    return index, len(workers)


DEVICE = re.compile(r'/?(job:\w+/(replica:\d+/)?(task:\d+/)?)?(device:)?(cpu|gpu|tpu):\d+',
                    re.IGNORECASE)


def parse_devices(text):
    """'/gpu:0,/gpu:1' -> ['/gpu:0', '/gpu:1'] (a missing leading slash is added)."""
    devices = [d.strip() for d in str(text).split(',') if d.strip()]
    for device in devices:
        if not DEVICE.fullmatch(device):
            raise DistributeError(f"distribute_devices: '{device}' is not a device name such "
                                  f"as /gpu:0 or /cpu:1")
    return ['/' + d.lstrip('/') for d in devices]


def make_strategy(config):
    """The strategy for `config.distribute`, or None for `none`. Raises DistributeError for a bad
    setting (one line, for the user)."""
    if config.distribute == 'none':
        return None
    import tensorflow as tf
    if config.distribute == 'mirrored':
        devices = parse_devices(config.distribute_devices) or None
        if devices:
            _split_cpu(devices)
        strategy = tf.distribute.MirroredStrategy(devices)
    else:
        index, count = cluster_info()
        if count == 1 and 'TF_CONFIG' not in os.environ:
            raise DistributeError('distribute multiworker needs TF_CONFIG (see the README: '
                              'Training on many devices)')
        _configure_coordination(config.distribute_timeout, count)
        options = tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=float(config.distribute_collective_timeout))
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    return strategy


def _split_cpu(devices):
    """Splits the CPU into as many logical devices as `devices` names CPUs (/cpu:N for N > 0
    exist only as logical devices). Must happen before TensorFlow initialises its devices."""
    import tensorflow as tf
    cpus = [int(m.group(1)) for d in devices
            for m in [re.fullmatch(r'/(?:job:\w+/(?:replica:\d+/)?(?:task:\d+/)?)?(?:device:)?'
                                   r'cpu:(\d+)', d.lower())] if m]
    if not cpus or max(cpus) == 0:
        return
    physical = tf.config.list_physical_devices('CPU')[0]
    configured = tf.config.get_logical_device_configuration(physical)
    wanted = max(cpus) + 1
    if configured and len(configured) >= wanted:
        return
    try:
        tf.config.set_logical_device_configuration(
            physical, [tf.config.LogicalDeviceConfiguration()] * wanted)
    except RuntimeError:
        raise DistributeError(f'distribute_devices names {wanted} CPUs, but TensorFlow has already '
                          f'set up its devices; choose the devices before any TensorFlow '
                          f'op runs') from None


def _configure_coordination(timeout, workers):
    """TensorFlow's coordination service (which MultiWorkerMirroredStrategy starts, and which
    replaces its older Python health check) with our timeouts: a worker whose heartbeats stop for
    `timeout` seconds counts as lost, and every other worker's pending collectives fail with
    an error naming it, instead of a hang. At start, workers wait up to max(120, 2 x timeout)
    seconds for each other. Must run before the strategy is created."""
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context
    import tensorflow as tf
    spec = tf.distribute.cluster_resolver.TFConfigClusterResolver().cluster_spec()
    context.context().configure_coordination_service(
        service_type='standalone',
        service_leader=multi_worker_util.coordination_leader(spec),
        heartbeat_timeout_in_ms=int(1000 * timeout),
        cluster_register_timeout_in_ms=int(1000 * max(120, 2 * timeout)),
        coordinated_jobs=[coordination_config_pb2.CoordinatedJob(name='worker',
                                                                 num_tasks=workers)])


# A peer named in a collective error: `/job:worker/task:1` or `/job:worker/replica:0/task:1`.
_PEER = re.compile(r'/job:\w+/(?:replica:\d+/)?task:(\d+)')


def describe_failure(error, own_index=None):
    """A `WorkerLost` naming the lost worker for a collective error of a lost peer, else None.
    The message also names this worker's own device (in the failed op's name), so the lost
    worker is the first task mentioned that is not `own_index` (default: from `TF_CONFIG`)."""
    import tensorflow as tf
    if not isinstance(error, (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                              tf.errors.CancelledError, tf.errors.InternalError,
                              tf.errors.FailedPreconditionError)):
        return None
    if own_index is None:
        own_index = cluster_info()[0]
    message = str(error)
    peers = [int(task) for task in _PEER.findall(message) if int(task) != own_index]
    lost = f'worker {peers[0]}' if peers else 'another worker'
    first = message.strip().splitlines()[0][:300] if message.strip() else type(error).__name__
    return WorkerLost(f'lost {lost} of the cluster ({type(error).__name__}: {first})')


def agree_max(strategy, value):
    """The largest `value` (a number) over all workers; every worker gets the same result. Each
    worker's first replica contributes its value in its own slot of a vector that is summed."""
    import numpy as np
    import tensorflow as tf
    index, count = cluster_info()
    local = strategy.num_replicas_in_sync // count

    def slot(context):
        vector = np.zeros(count, np.float64)
        if context.replica_id_in_sync_group % local == 0:
            vector[index] = value
        return tf.constant(vector)

    per_replica = strategy.experimental_distribute_values_from_function(slot)
    total = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
    return int(np.max(total.numpy()))


def weights_digest(agent):
    """SHA-256 (first 16 hex digits) of every network and optimizer variable: equal on all
    workers of a healthy run, which a worker prints at its end."""
    import hashlib
    digest = hashlib.sha256()
    for var in [v for net in agent.networks for v in net.variables] + [
            v for opt in agent.optimizers for v in opt.variables]:
        digest.update(var.numpy().tobytes())
    return digest.hexdigest()[:16]
