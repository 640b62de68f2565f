"""Tests of the Kubernetes API stand-in (simcloud.kube)."""
