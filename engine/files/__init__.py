"""Run files: the run directory, safe file I/O, metrics, checkpoints, their vetting and sidecars."""
