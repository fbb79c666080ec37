"""Observation conventions shared by the environments, the training loop and the agent.

TF-free (environment worker processes import it), and free of package imports so that every side
can import it without a cycle."""

# Keys with this prefix are logged (episode statistics, achievements), never fed to a network.
LOG_PREFIX = 'log_'


def is_model_input(key):
    """Whether an observation key may reach the model (everything except `log_` keys)."""
    return not key.startswith(LOG_PREFIX)
