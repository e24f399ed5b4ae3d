"""SageMaker's inference handler contract: codecs, handlers, model loading (inference and batch)."""
