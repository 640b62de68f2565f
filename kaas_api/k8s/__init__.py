"""The k8s proxy: kubectl → ``/k8s/clusters/{id}/...`` → the tunnel server holding the cluster's agent."""
