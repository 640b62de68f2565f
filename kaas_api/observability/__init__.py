"""Request ids, structured logs and metrics of the API process."""
