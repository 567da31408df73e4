"""Tests on real local deployments: a Redis Cluster, and a primary watched by Sentinel."""
