"""Kubeconfig downloads and the kubeconfig tokens they carry (scoped to one user and one cluster)."""
