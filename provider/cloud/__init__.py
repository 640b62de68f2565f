"""Cloud access: the driver interface, its OpenStack implementation, and our own error tree."""
