"""provider: the region side of kaas (Celery workers, reconciler, cloud driver, cloud-init bootstrap)."""
