"""The paper: DreamerV2's networks, distributions, world model, actor-critic, exploration and the
agent that ties them together. Nothing here knows about environments, files or the training loop;
everything it needs comes in as arguments (a config, the spaces, batches of data).

`Agent` loads on first use so that the TF-free `dreamerv2_tf.agent.choices` can be imported by
the config system without TensorFlow."""

__all__ = ['Agent', 'config_choices']


def config_choices():
    """The agent's table of valid config values (see `dreamerv2_tf.agent.choices`)."""
    from dreamerv2_tf.agent import choices
    return choices.config_choices()


def __getattr__(name):
    if name == 'Agent':
        from dreamerv2_tf.agent.agent import Agent
        return Agent
    raise AttributeError(f"module 'dreamerv2_tf.agent' has no attribute '{name}'")
