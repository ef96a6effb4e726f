"""The one training engine: loop, checkpoints, distributed set-up, run directory."""
