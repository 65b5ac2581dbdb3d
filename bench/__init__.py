"""celerykit benchmarks: the kit against plain-Celery baselines on the same compose stack, in one run."""
