"""Transform jobs: the API, shards of artifact-store inputs, per-file outcomes, assembly."""
