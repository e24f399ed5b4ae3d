"""skmaker's server side: control plane, trainer, inference and batch workers."""
