"""What kaas keeps in every user cluster (CNI, cloud controller, CSI, metrics-server, its own agent), applied
through the cluster's tunnel once its agent is connected: ``catalog`` (what), ``kube_client`` (how: the
``kubernetes`` client through the signed internal hop), ``reconcile`` (the step and its condition)."""
