"""The in-cluster kaas agent: dials out to kaas over a tunnel and forwards requests to its own apiserver."""
