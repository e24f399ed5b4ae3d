"""Artifacts: the local-directory object store and the ArtifactService over it."""
