"""Peers in the same run: skmaker (fast path on and off), raw grpcio, MLServer, in-process.

Called by `benchmarks/predict.py` (on by default; `--no-peers` skips it). For a DecisionTree, a
100-tree RandomForest and a HistGradientBoosting classifier (20 features, make_classification),
every server serves the model, pinned to one core (`taskset -c 0`; the load generators run on
the other cores), and one-row calls are measured at concurrency 1 and 32, one server at a time
(the others idle). `--rounds N` repeats the sequence of every server's cells N times and each
cell is the median over the rounds (`rounds_p50_ms` lists each round's p50), so background load
that drifts during the run hits every server alike:

* raw: predict.py's baseline server (plain grpcio, CSV -> float array -> model.predict -> JSON);
* skmaker: `python -m services.inference` standalone, default settings (fast path and
  micro-batching on), driven with Predict and with V2 ModelInfer;
* skmaker-sklearn: the same with `SKMAKER_FAST_PATH=0` (scikit-learn serves, micro-batching on);
* mlserver: MLServer 1.7.1 with mlserver-sklearn from `.venv-mlserver` (`make mlserver`), at its
  best setting for this: in-process (`parallel_workers: 0`) with adaptive batching
  (`max_batch_size` 32, `max_batch_time` 1 ms), driven with V2 ModelInfer;
* in-process: `model.predict` on one row, called back to back in one process (p50).

Returns the figures plus `dt_throughput_c32_vs_raw`, `rf_latency_c1_vs_raw` (p50),
`hgb_latency_c1_vs_inprocess` (p50) and `min_throughput_c32_vs_mlserver_best` (the smallest
over the three models of skmaker's V2 requests/s over MLServer's; null when MLServer is not
installed, which is reported).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
MLSERVER = REPO_ROOT / ".venv-mlserver" / "bin" / "mlserver"
N_FEATURES = 20
PEER_ROW = [round(0.1 * ((i * 7) % 13) - 0.6, 3) for i in range(N_FEATURES)]
MODELS = ("dt", "rf", "hgb")
SERVE_SCRIPT = """
import os

import joblib


def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))
"""


def v2_request(model: str, rows: int) -> Any:
    """ModelInfer of `rows` copies of PEER_ROW as one FP64 tensor."""
    from skmaker.v1 import open_inference_pb2

    tensor = open_inference_pb2.ModelInferRequest.InferInputTensor(
        name="input-0", datatype="FP64", shape=[rows, N_FEATURES]
    )
    tensor.contents.fp64_contents.extend(PEER_ROW * rows)
    return open_inference_pb2.ModelInferRequest(model_name=model, inputs=[tensor])


def _train(kind: str) -> Any:
    from sklearn.datasets import make_classification
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.tree import DecisionTreeClassifier

    features, labels = make_classification(
        5000, N_FEATURES, n_informative=10, n_classes=3, random_state=0
    )
    model = {
        "dt": lambda: DecisionTreeClassifier(random_state=0),
        "rf": lambda: RandomForestClassifier(100, random_state=0),
        "hgb": lambda: HistGradientBoostingClassifier(random_state=0),
    }[kind]()
    return model.fit(features, labels)


def inprocess_latency(model_dir: Path, seconds: float) -> dict:
    """p50 of `model.predict` on one row, back to back for `seconds`."""
    import joblib
    import numpy as np

    model = joblib.load(model_dir / "model.joblib")
    row = np.array([PEER_ROW])
    for _ in range(20):
        model.predict(row)
    latencies = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        begin = time.perf_counter()
        model.predict(row)
        latencies.append(time.perf_counter() - begin)
    return {"p50_ms": statistics.median(latencies) * 1000, "calls": len(latencies)}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_v2_ready(process: subprocess.Popen[bytes], port: int, model: str, log: Path) -> None:
    import grpc

    from skmaker.v1 import open_inference_pb2, open_inference_pb2_grpc

    deadline = time.monotonic() + 180
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = open_inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"MLServer exited: {log.read_text()[-2000:]}")
            try:
                request = open_inference_pb2.ModelReadyRequest(name=model)
                if stub.ModelReady(request, timeout=2).ready:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"MLServer not ready within 180 s: {log.read_text()[-2000:]}")


def _mlserver_folder(folder: Path, kind: str, model_dir: Path) -> Path:
    root = folder / f"mlserver-{kind}"
    (root / kind).mkdir(parents=True)
    _choose_mlserver_ports(root)
    model_settings = {
        "name": kind,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "max_batch_size": 32,
        "max_batch_time": 0.001,
        "parameters": {"uri": str(model_dir / "model.joblib")},
    }
    (root / kind / "model-settings.json").write_text(json.dumps(model_settings))
    return root


def _choose_mlserver_ports(root: Path) -> int:
    """Writes MLServer's settings with free ports; returns its gRPC port."""
    settings = {
        "http_port": _free_port(),
        "grpc_port": _free_port(),
        "metrics_port": _free_port(),
        "host": "127.0.0.1",
        "parallel_workers": 0,
        "metrics_endpoint": None,
        "debug": False,
    }
    (root / "settings.json").write_text(json.dumps(settings))
    return int(settings["grpc_port"])


# MLServer takes its ports from its settings; a port found free can be taken by another process
# before MLServer binds it (the machine is shared), so a start that fails to bind is retried.
_MLSERVER_STARTS = 3


def _start_mlserver(
    command: list[str], env: dict[str, str], root: Path, kind: str, log_path: Path
) -> tuple[subprocess.Popen[bytes], int]:
    for attempt in range(1, _MLSERVER_STARTS + 1):
        port = _choose_mlserver_ports(root)
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=log)
        try:
            _wait_v2_ready(process, port, kind, log_path)
            return process, port
        except RuntimeError:
            process.kill()
            process.wait()
            if "Failed to bind" not in log_path.read_text() or attempt == _MLSERVER_STARTS:
                raise
            print(f"MLServer could not bind its ports (attempt {attempt}); new ports", flush=True)
    raise AssertionError("unreachable")


def measure_peers(
    args: Any, measure: Callable[..., dict], wait_serving: Callable[..., int]
) -> dict:
    """Runs every peer cell (see the module docstring); returns the figures and ratios.

    For each model every server is started (all pinned to the same core, idle but for the one
    measured), then `args.rounds` rounds each measure every server's cells in turn, so that
    drifting background load hits every side of each ratio; each cell is the median over the
    rounds (`rounds_p50_ms` keeps every round's p50).
    """
    import joblib

    server_pin, client_pin = _pins()
    have_mlserver = MLSERVER.exists()
    if not have_mlserver:
        print(
            f"MLServer is not installed ({MLSERVER}): run `make mlserver`; its cells are skipped",
            flush=True,
        )
    figures: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="skmaker-peers-") as tmp:
        folder = Path(tmp)
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        for kind in MODELS:
            model_dir, code_dir = folder / kind / "model", folder / kind / "code"
            model_dir.mkdir(parents=True)
            code_dir.mkdir(parents=True)
            joblib.dump(_train(kind), model_dir / "model.joblib")
            (code_dir / "serve.py").write_text(SERVE_SCRIPT)
            figures[kind] = {"inprocess": _inprocess_rounds(args, model_dir, server_pin, env)}
            servers = _servers(args, kind, folder, model_dir, code_dir, have_mlserver)
            processes: dict[str, subprocess.Popen[bytes]] = {}
            try:
                ports = _start(
                    servers, processes, folder / kind, kind, server_pin, env, wait_serving
                )
                rounds: dict[str, dict[str, list[dict]]] = {}
                for _ in range(args.rounds):
                    for name, (_, _, protocols) in servers.items():
                        for protocol in protocols:
                            label = (
                                name
                                if protocol == "predict" or name == "mlserver"
                                else name + "-v2"
                            )
                            for concurrency in (1, 32):
                                cell = measure(
                                    ports[name], concurrency, 1, args, protocol, kind, client_pin
                                )
                                rounds.setdefault(label, {}).setdefault(
                                    f"c{concurrency}", []
                                ).append(cell)
                                _print_cell(kind, label, concurrency, cell)
                for label, cells in rounds.items():
                    figures[kind][label] = {key: _median_cell(c) for key, c in cells.items()}
                figures[kind]["paths"] = {
                    name: _predict_path(folder / kind / f"{name}.log")
                    for name in servers
                    if name.startswith("skmaker")
                }
            finally:
                _stop(processes)
    return _ratios(figures, have_mlserver)


Servers = dict[str, tuple[list[str], dict[str, str], tuple[str, ...]]]


def _servers(
    args: Any, kind: str, folder: Path, model_dir: Path, code_dir: Path, have_mlserver: bool
) -> Servers:
    """name -> (command, extra environment, protocols measured)."""
    servers: Servers = {
        "raw": (
            [
                sys.executable,
                str(REPO_ROOT / "benchmarks" / "predict.py"),
                "baseline-server",
                f"--model-dir={model_dir}",
                f"--port-file={folder / kind / 'raw.port'}",
                f"--max-workers={args.max_workers}",
            ],
            {},
            ("predict",),
        ),
    }
    for name, extra_env in (("skmaker", {}), ("skmaker-sklearn", {"SKMAKER_FAST_PATH": "0"})):
        servers[name] = (
            [
                sys.executable,
                "-m",
                "services.inference",
                f"--model-dir={model_dir}",
                f"--code-dir={code_dir}",
                "--entry-point=serve.py",
                f"--endpoint-name={kind}",
                f"--work-dir={folder / kind / name}",
                "--grpc-port=0",
                "--metrics-port=0",
                f"--port-file={folder / kind / (name + '.port')}",
                f"--max-workers={args.max_workers}",
                "--log-level=INFO",
            ],
            extra_env,
            ("predict", "v2") if name == "skmaker" else ("predict",),
        )
    if have_mlserver:
        root = _mlserver_folder(folder, kind, model_dir)
        servers["mlserver"] = ([str(MLSERVER), "start", str(root)], {}, ("v2",))
    return servers


def _start(
    servers: Servers,
    processes: dict[str, subprocess.Popen[bytes]],
    folder: Path,
    kind: str,
    pin: list[str],
    env: dict[str, str],
    wait_serving: Callable[..., int],
) -> dict[str, int]:
    """Starts every server (into `processes`, for the caller to stop); returns their ports.

    MLServer first, and serving, before the others bind their port 0: those cannot take its ports.
    """
    ports = {}
    if "mlserver" in servers:
        command, extra_env, _ = servers["mlserver"]
        root = folder.parent / f"mlserver-{kind}"
        processes["mlserver"], ports["mlserver"] = _start_mlserver(
            [*pin, *command], {**env, **extra_env}, root, kind, folder / "mlserver.log"
        )
    for name, (command, extra_env, _) in servers.items():
        if name == "mlserver":
            continue
        with (folder / f"{name}.log").open("wb") as log:
            processes[name] = subprocess.Popen(
                [*pin, *command], cwd=REPO_ROOT, env={**env, **extra_env}, stdout=log, stderr=log
            )
    for name, process in processes.items():
        if name != "mlserver":
            ports[name] = wait_serving(process, folder / f"{name}.port", name)
    return ports


def _stop(processes: dict[str, subprocess.Popen[bytes]]) -> None:
    for process in processes.values():
        process.terminate()
    for process in processes.values():
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _inprocess_rounds(args: Any, model_dir: Path, pin: list[str], env: dict[str, str]) -> dict:
    """In-process p50 of one row, the median over `args.rounds` runs."""
    cells = []
    for _ in range(args.rounds):
        done = subprocess.run(
            [
                *pin,
                sys.executable,
                str(REPO_ROOT / "benchmarks" / "predict.py"),
                "inprocess",
                f"--model-dir={model_dir}",
                f"--seconds={args.seconds}",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            check=True,
        )
        cells.append(json.loads(done.stdout.decode()))
    return _median_cell(cells)


def _median_cell(cells: list[dict]) -> dict:
    """One cell over the rounds: the median of each figure, and every round's p50."""
    merged: dict[str, Any] = {
        key: statistics.median(cell[key] for cell in cells) for key in cells[0]
    }
    merged["rounds_p50_ms"] = [cell["p50_ms"] for cell in cells]
    return merged


def _print_cell(kind: str, label: str, concurrency: int, cell: dict) -> None:
    print(
        f"{kind:4} {label:16} c={concurrency:<3} "
        f"p50={cell['p50_ms']:8.3f} ms  p99={cell['p99_ms']:8.3f} ms"
        f"  {cell['rps']:8.0f} req/s" + (f"  errors={cell['errors']}" if cell["errors"] else ""),
        flush=True,
    )


def _predict_path(log_path: Path) -> str:
    """The replica's last `predict path ...` log line (which path served, and why)."""
    lines = [line for line in log_path.read_text().splitlines() if "predict path" in line]
    return lines[-1][-300:] if lines else ""


def _ratios(figures: dict[str, dict[str, Any]], have_mlserver: bool) -> dict:
    dt, rf, hgb = figures["dt"], figures["rf"], figures["hgb"]
    result: dict[str, Any] = {
        "peers": figures,
        "dt_throughput_c32_vs_raw": dt["skmaker"]["c32"]["rps"] / dt["raw"]["c32"]["rps"],
        "rf_latency_c1_vs_raw": rf["skmaker"]["c1"]["p50_ms"] / rf["raw"]["c1"]["p50_ms"],
        "hgb_latency_c1_vs_inprocess": (
            hgb["skmaker"]["c1"]["p50_ms"] / hgb["inprocess"]["p50_ms"]
        ),
        "min_throughput_c32_vs_mlserver_best": None,
    }
    if have_mlserver:
        result["min_throughput_c32_vs_mlserver_best"] = min(
            figures[kind]["skmaker-v2"]["c32"]["rps"] / figures[kind]["mlserver"]["c32"]["rps"]
            for kind in MODELS
        )
    print()
    print("model  server            c1 p50 ms   c32 req/s")
    for kind in MODELS:
        for name, cells in figures[kind].items():
            if name in ("inprocess", "paths"):
                continue
            print(f"{kind:5}  {name:16} {cells['c1']['p50_ms']:10.3f} {cells['c32']['rps']:11.0f}")
        print(f"{kind:5}  {'in-process':16} {figures[kind]['inprocess']['p50_ms']:10.3f}")
    return result


def _pins() -> tuple[list[str], list[str]]:
    """taskset prefixes: the server on core 0, load generators on the others."""
    cores = sorted(os.sched_getaffinity(0))
    if shutil.which("taskset") is None or len(cores) < 2:
        print("taskset missing or one core only: servers are not pinned", flush=True)
        return [], []
    rest = ",".join(str(core) for core in cores[1:])
    return ["taskset", "-c", str(cores[0])], ["taskset", "-c", rest]
