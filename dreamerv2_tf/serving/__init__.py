"""Serving: the exported policy module and loading a policy from a checkpoint or a SavedModel."""
