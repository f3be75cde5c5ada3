"""Run life: a session, its settings, the trainer and its parts, a followed run."""
