"""Deployment files: the PostgreSQL instance (dagster.yaml) and the k8s executor (definitions_k8s.py)."""
