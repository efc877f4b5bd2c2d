"""Data-parallel training: the environment (torch-free) and the collectives the training loop uses."""
