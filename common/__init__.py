"""Helpers every layer uses (files, hashing, devices, HDF5 handles, ffmpeg).

The bottom of the layering: ``common`` imports nothing of the project, and ``manifests``,
``extract`` and ``distill`` may all import it.
"""
