"""The paper: DreamerV2's networks, distributions, world model, actor-critic, exploration and the
agent that ties them together. Nothing here knows about environments, files or the training loop;
everything it needs comes in as arguments (a config, the spaces, batches of data)."""

from dreamerv2_tf.agent.agent import Agent

__all__ = ['Agent']
