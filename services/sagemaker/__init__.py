"""SageMaker's contracts that more than one service implements, owned by none of them.

`transform/`: batch transform records (SplitType, BatchStrategy, MaxPayloadInMB), DataProcessing
filters and joins, and bad-record reports: the control checks a job's settings with them at
create time and writes errors files; batch workers read, score and report records with them.
"""
