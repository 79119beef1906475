"""Hydra config files (train.yaml and the env/, algo/ groups)."""
