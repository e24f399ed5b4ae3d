"""Training jobs: the API (servicer, converters), the job state machine, validation, its tables."""
