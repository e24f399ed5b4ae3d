"""SageMaker batch transform's record contract: reading records, DataProcessing, bad records."""
