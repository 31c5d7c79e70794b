"""Cluster identity: the cluster CA, role-bearing certificates and mutual-TLS contexts."""
