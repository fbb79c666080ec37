"""What the agent's code needs to run as one replica of a `tf.distribute` strategy.

Inside `strategy.run` every replica sees its own slice of the global batch. These helpers keep
R replicas x batch B equal to one device with batch R x B:

- `mean` all-reduces (gradients, batch statistics) to the global-batch mean;
- `batch_noise` draws random numbers for the *global* batch from the replica-independent seed
  and keeps this replica's rows, so replica r samples exactly what rows r*B..(r+1)*B of a
  one-device batch would (every replica gets different noise; the run stays reproducible);
- `cross_replica` runs variable updates once, in cross-replica context, so that optimizer steps,
  the slow critic and counters change identically on every replica.

Outside a strategy (`distribute: none`) each helper is the plain operation, with the same ops in
the same order as before, so the default path is unchanged bit for bit.
"""

import tensorflow as tf


def replica_context():
    """The replica context of a running `strategy.run`, or None (no strategy, or cross-replica
    code such as the policy and the report)."""
    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return None
    return tf.distribute.get_replica_context()


def mean(values):
    """`values` (a tensor or a nest of them) averaged over the replicas; identity outside."""
    context = replica_context()
    if context is None:
        return values
    return context.all_reduce(tf.distribute.ReduceOp.MEAN, values)


def batch_noise(draw, shape):
    """`draw(shape)` for this replica's rows of the global batch.

    `shape` is [B, ...] with the per-replica batch first; `draw` must be a stateless sampler of
    a fixed seed. Inside a replica of R, draws [R * B, ...] and returns rows r*B..(r+1)*B.
    Scalars (no batch axis) are drawn as they are, identically on every replica."""
    context = replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return draw(shape)
    shape = tf.convert_to_tensor(shape, tf.int32)
    if shape.shape[0] == 0:
        return draw(shape)
    count = context.num_replicas_in_sync
    rows = shape[0]
    noise = draw(tf.concat([[count * rows], shape[1:]], 0))
    start = tf.cast(context.replica_id_in_sync_group, rows.dtype) * rows
    return noise[start:start + rows]


def tile_for_batch_noise(value):
    """(`value` repeated along axis 0 once per replica, slice) for samplers that cannot take a
    shape (TFP's truncated normal): sample the tiled parameters, then apply `slice`. Outside a
    strategy, `value` itself and the identity."""
    context = replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value, lambda x: x
    count = context.num_replicas_in_sync
    rows = tf.shape(value)[0]
    start = tf.cast(context.replica_id_in_sync_group, rows.dtype) * rows
    tiled = tf.tile(value, tf.concat([[count], tf.ones([tf.rank(value) - 1], tf.int32)], 0))
    return tiled, lambda x: x[start:start + rows]


def cross_replica(fn, *args):
    """Runs `fn(*args)` once in cross-replica context (inside a replica function) or directly
    (outside). Tensor `args` must be equal on all replicas (e.g. all-reduced); `fn` gets the
    first local replica's value. Variables updated by `fn` then change identically everywhere."""
    context = replica_context()
    if context is None:
        return fn(*args)

    def merged(strategy, *per_replica):
        local = [strategy.experimental_local_results(a)[0] for a in per_replica]
        return fn(*local)

    return context.merge_call(merged, args=args)


def mean_at_least(values, floor):
    """max(mean(values), floor) with the mean over the global batch (free nats of the average).

    Inside a replica, returns the replica's own mean where the global mean reaches `floor` and
    `floor` where it does not, so that the average over replicas and its gradient are those of
    one device with the whole batch."""
    local = tf.reduce_mean(values)
    context = replica_context()
    if context is None:
        return tf.maximum(local, floor)
    total = context.all_reduce(tf.distribute.ReduceOp.MEAN, tf.stop_gradient(local))
    # tf.maximum passes the gradient to its first argument on ties, so >= here too.
    return tf.where(total >= floor, local, tf.cast(floor, local.dtype))
