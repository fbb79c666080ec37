"""The runtime around the agent: episodes on disk and their sampling (`replay`), stepping envs
with a policy (`driver`), checkpoints, logging and the training loop. It uses the agent only
through the objects the loop is given, so tests can pass stubs."""
