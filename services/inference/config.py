"""InferenceSettings, and the contract by which a replica backend starts an inference replica.

Started by the control's replica backend (one process per replica)::

    python -m services.inference --control HOST:PORT --endpoint-name E --model-name M \\
        --replica-id R --work-dir DIR [--shared-port P] --grpc-port 0 --metrics-port 0 \\
        --port-file F --failure-file F2 [runtime flags: --host, --shutdown-grace-s, ...]

Every flag has an environment variable behind it with the prefix `SKMAKER_INFERENCE_`
(`--max-payload-bytes` <- `SKMAKER_INFERENCE_MAX_PAYLOAD_BYTES`); a flag wins over the variable.

Standalone, for tests and benchmarks (no control, no download; the folders are used in place)::

    python -m services.inference --model-dir D --code-dir C --entry-point E \\
        [--endpoint-name E] [--replica-id R] --grpc-port 0 --metrics-port 0 --port-file F

Startup: with `--control`, DescribeModel(M) on the control's ModelService, download the model
archive (sha256-checked) and extract it into `DIR/model`; the code comes from the model's
`source_uri` (extracted into `DIR/code`) or else from `DIR/model/code`. Then `requirements.txt`
in the code folder is installed into a content-addressed cache (`--deps-dir`, default
`DIR/../deps`), the model's environment is applied, the entry point is imported, `model_fn`
loads the model and a warm-up prediction runs. Only then is the shared port bound and health
SERVING.

Port file (`--port-file`, JSON, replaced atomically): `{"grpc": own port, "metrics": port}` as
soon as the own port is bound (health NOT_SERVING while the model loads); rewritten with
`"shared": port` added once loaded, when `--shared-port` is given. Watch grpc.health.v1 on the
own port: SERVING means loaded, warmed up and listening on the shared port too.

Failure file (`--failure-file`): written only when loading fails (download, extraction,
requirements, import, model_fn, warm-up), as one paragraph of plain text naming the cause, e.g.
"entry point 'train.py' defines no model_fn: ...". The same text goes to stderr.

Exit codes: 0 after SIGTERM/SIGINT (health NOT_SERVING first, calls still served for
`--drain-notice-s` so that balancers watching health stop sending, then new Predict calls
UNAVAILABLE until none came for `--drain-quiet-s` (at most `--drain-quiet-timeout-s`), then
the server stops and in-flight calls finish within `--shutdown-grace-s`); 1 when the model
could not be loaded (see the failure file); 2 for bad flags or environment values.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.runtime.settings import ServiceSettings, setting

ENV_PREFIX = "SKMAKER_INFERENCE_"

# SageMaker's InvokeEndpoint limit (contract §2.5).
DEFAULT_MAX_PAYLOAD_BYTES = 6 * 1024 * 1024


@dataclass(frozen=True)
class InferenceSettings(ServiceSettings):
    """One inference replica: loads one model and serves Predict and Open Inference V2."""

    control: str = setting("", "control's gRPC address; empty for standalone (--model-dir)")
    endpoint_name: str = setting("", "endpoint this replica serves (metrics label, name check)")
    model_name: str = setting("", "model to DescribeModel on the control")
    replica_id: str = setting("", "this replica's id, returned in every PredictResponse")
    work_dir: str = setting("./.skmaker/work/inference", "where the model and code are unpacked")
    deps_dir: str = setting("", "requirements.txt install cache; empty means <work-dir>/../deps")
    model_dir: str = setting("", "standalone: an unpacked model folder (no control)")
    code_dir: str = setting("", "standalone: the folder holding the entry point")
    entry_point: str = setting("", "standalone: the script defining model_fn")
    shared_port: int = setting(0, "endpoint port shared by all its replicas (SO_REUSEPORT)")
    failure_file: str = setting("", "write why the model could not be loaded here")
    max_payload_bytes: int = setting(
        DEFAULT_MAX_PAYLOAD_BYTES, "largest Predict or ModelInfer payload accepted"
    )
    # 10 s: a long-lived channel through the endpoint's shared address reaches a replica the
    # autoscaler added within about the time the scale-out itself takes (the skmaker client
    # balances over replica addresses and does not depend on it). Reconnecting costs one
    # handshake; calls on the aged connection finish within the grace period.
    max_connection_age_s: float = setting(
        10.0, "close client connections after this long so channels rebalance across replicas"
    )
    max_connection_age_grace_s: float = setting(
        10.0, "time calls on an aged connection get to finish"
    )
    drain_notice_s: float = setting(
        0.2,
        "on SIGTERM, health says NOT_SERVING and calls are still served this long, so that "
        "balancers watching health (the gateway) stop sending before calls are refused",
    )
    drain_quiet_s: float = setting(
        0.3, "on SIGTERM, refuse new calls until none came for this long, then stop serving"
    )
    drain_quiet_timeout_s: float = setting(
        1.5, "the longest that refusing phase lasts (callers that never move away)"
    )
    region: str = setting("local", "SAGEMAKER_REGION given to the user's code")
    pip_timeout_s: float = setting(900.0, "time limit for installing requirements.txt")
    control_timeout_s: float = setting(300.0, "deadline of each call to the control (download)")
    control_lost_exit_s: float = setting(
        0.0,
        "with --control: stop (drain and exit) once the control has not answered for this "
        "long; 0: never (a control's containers get it; local replicas stop with it anyway)",
    )
    native_threads: int = setting(
        0,
        "threads one call's native code (OpenMP, BLAS) may use; 0 divides the cores among the "
        "--max-workers RPC threads (at least 1); OMP_NUM_THREADS and the like, if set, win",
    )

    @property
    def is_standalone(self) -> bool:
        """True when the model comes from local folders instead of the control."""
        return not self.control

    def check(self) -> None:
        """Refuses contradictory or incomplete flags.

        Raises:
            ValueError: neither --control nor --model-dir, both, or a missing companion flag.
        """
        if self.control and self.model_dir:
            raise ValueError("give either --control (with --model-name) or --model-dir, not both")
        if self.control and not self.model_name:
            raise ValueError("--control needs --model-name: the model to describe and load")
        if not self.control and not self.model_dir:
            raise ValueError("give --control and --model-name, or --model-dir for standalone")
        if self.model_dir and not self.entry_point:
            raise ValueError("--model-dir needs --entry-point: the script defining model_fn")
        if self.max_payload_bytes <= 0:
            raise ValueError("--max-payload-bytes must be positive")
        if self.native_threads < 0:
            raise ValueError("--native-threads must be 0 (sized to the cores) or more")
