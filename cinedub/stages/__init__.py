"""Pipeline stages: classes that declare their resources, load models once per worker and process one source.

Stages take paths and small typed records and return the same; they never import Prefect (flows wire them).
"""
