"""celerykit: prioritized Celery worker pools, Beat and Flower behind nginx, proven by real services."""

__version__ = "0.1.0"
