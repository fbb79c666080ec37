"""Names of the agent's configurable choices, one table per fact.

TF-free so that `dreamerv2_tf.config` can validate flags without importing TensorFlow. Each module
that implements a choice (networks, optimizer, world_model, actor_critic, exploration) builds its
implementation table and passes it through `implements()`, which fails at import if the table and
the names here ever differ, so the config and the code cannot drift apart.
"""

ACTIVATIONS = ('none', 'elu', 'relu', 'tanh', 'sigmoid', 'swish', 'silu', 'gelu', 'leaky_relu',
               'mish')
NORMS = ('none', 'layer')
HEAD_DISTS = ('mse', 'binary', 'onehot', 'normal', 'tanh_normal', 'trunc_normal')
ACTOR_DISTS = ('onehot', 'trunc_normal', 'tanh_normal', 'normal')  # plus 'auto'
STD_ACTS = ('softplus', 'sigmoid', 'sigmoid2')
OPTIMIZERS = ('adam', 'nadam', 'adamax', 'sgd', 'momentum')
REWARD_TRANSFORMS = ('identity', 'sign', 'tanh')
ACTOR_GRADS = ('reinforce', 'dynamics', 'both')  # plus 'auto'
EXPLORATION = ('Random', 'Plan2Explore', 'ModelLoss')  # plus 'greedy' (the task behaviour)
DISAG_TARGETS = ('stoch', 'deter', 'embed', 'feat')


def implements(names, table):
    """Returns `table` after checking that its keys are exactly `names` (import-time guard)."""
    if tuple(table) != tuple(names):
        raise AssertionError(f'implementation table {list(table)} differs from the config '
                             f'choices {list(names)}')
    return table


def config_choices():
    """(regex over flat config keys, allowed values) for the agent's keys, first match wins."""
    return (
        (r'clip_rewards', REWARD_TRANSFORMS),
        (r'expl_behavior', ('greedy',) + EXPLORATION),
        (r'actor_grad', ('auto',) + ACTOR_GRADS),
        (r'actor\.dist', ('auto',) + ACTOR_DISTS),
        (r'.*\.dist', HEAD_DISTS),
        (r'.*\.norm', NORMS),
        (r'.*\.act', ACTIVATIONS),
        (r'rssm\.std_act', STD_ACTS),
        (r'.*_opt\.opt', OPTIMIZERS),
        (r'disag_target', DISAG_TARGETS),
    )


def check(config):
    """Raises ValueError naming the key, its value and the valid choices for the first agent key
    of `config` (a Config or flat dict) whose value is not allowed."""
    import re
    flat = config.flat if hasattr(config, 'flat') else dict(config)
    table = config_choices()
    for key, value in flat.items():
        for pattern, allowed in table:
            if re.fullmatch(pattern, key):
                if value not in allowed:
                    raise ValueError(f"config key '{key}' must be one of "
                                     f"{', '.join(map(str, allowed))}; got {value!r}")
                break
