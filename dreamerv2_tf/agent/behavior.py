"""The behaviour protocol: what the agent needs from the task actor-critic and from every
exploration behaviour, so that it can hold them in one dict and iterate instead of special-casing.

A behaviour is constructed with the world model (which it reads only through the model's narrow
interface: `imagine`, `reward`, `embed`, `flat_stoch`, `stoch_size`, `deter_size`, `feat_size`),
then:

    behavior.build(feat, data, seed)    # eagerly, once: creates every variable and optimizer slot
    behavior.actor(feat)                # policy distribution with .sample(seed) (and maybe .mode())
    metrics = behavior.train(start, outputs, data, seed)   # one update, inside the train step

`feat` [B, T, F] are posterior features of a dummy batch, `data` the model inputs of that batch
(with `action`); in `train`, `start` is the posterior state dict [B, T, ...] to imagine from,
`outputs` the world model's training outputs (`embed`, `feat`, `post`, `prior`, `likes`, `kl`),
`data` the raw model inputs of the batch and `seed` an int [2] stateless seed.
"""

import abc


class Behavior(abc.ABC):

    # The policy: a callable feat [..., F] -> action distribution. An attribute rather than an
    # abstract method because the actor-critics expose their actor network itself (its variable
    # paths are checkpoint keys and tests read `behavior.actor.trainable_variables`).
    actor = None

    @property
    @abc.abstractmethod
    def networks(self):
        """Keras models whose variables are checkpointed (paths are the checkpoint keys)."""

    @property
    @abc.abstractmethod
    def optimizers(self):
        """Optimizer wrappers whose state is checkpointed."""

    @property
    @abc.abstractmethod
    def state_variables(self):
        """Other variables to checkpoint (counters, normalisers)."""

    @abc.abstractmethod
    def build(self, feat, data, seed):
        """Creates every variable eagerly, before any function is traced."""

    @abc.abstractmethod
    def train(self, start, outputs, data, seed):
        """One update; returns a dict of scalar metrics."""
