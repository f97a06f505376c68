"""Prefect flows and deployments of CineDub (thin wrappers over cinedub.stages)."""
