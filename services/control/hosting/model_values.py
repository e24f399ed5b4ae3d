"""A deployable model as the control stores it: an artifact, its serving code, its environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from services.control.training.values import RuntimeVersions


@dataclass(frozen=True)
class Model:
    """One model (SageMaker's CreateModel): immutable once created.

    Attributes:
        name: unique, by SageMaker's rule (`skmaker.v1.names`: 1-63 characters).
        model_data_uri: `store://` URI of `model.tar.gz`.
        entry_point: the script defining `model_fn` (SAGEMAKER_PROGRAM).
        source_uri: `store://` URI of a code bundle; empty when the code sits in the model
            archive under `code/`.
        environment: variables set for the serving process.
        training_job_name: the job the model came from, or empty.
        creation_time: Unix seconds.
        runtime_versions: what its training job ran with (set by the control from the job;
            all empty when the model names no job, or the job reported none).
        framework_version: the scikit-learn asked for (empty: its training job's, else the
            newest).
        script_runtime: the runtime its replicas and batch workers run on (set by the
            control at create, e.g. `sklearn-1.2`; empty for models created before runtimes,
            which run on the control's default).
    """

    name: str
    model_data_uri: str
    entry_point: str
    source_uri: str = ""
    environment: Mapping[str, str] = field(default_factory=dict)
    training_job_name: str = ""
    creation_time: float = 0.0
    runtime_versions: RuntimeVersions = field(default_factory=RuntimeVersions)
    framework_version: str = ""
    script_runtime: str = ""
