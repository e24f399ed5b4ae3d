"""Predict latency and throughput: a skmaker replica, a minimal grpcio server, the gateway.

One invocation (`python benchmarks/predict.py [--seconds 5]`) trains an iris DecisionTree, then
starts two servers as subprocesses on 127.0.0.1 port 0 (each writes a port file), each one
process serving the same model through the same `skmaker.v1.InferenceService/Predict` proto,
and a gateway in front of the skmaker one:

* baseline: a plain synchronous grpcio server whose Predict only parses the CSV text into a float
  array, calls `model.predict` and answers the labels as JSON (plus grpc health, for readiness);
* skmaker: `python -m services.inference` in standalone mode with default settings (the real
  servicer, interceptors, metrics, codecs and handler chain, loading through `model_fn`);
* gateway: `python -m services.gateway` with a fixed route to that same skmaker replica, so a
  call makes one more hop (measured for one row, at concurrency 1 and 32). Its data plane is
  HAProxy by default, as deployed (`--gateway-data-plane python` measures the Python one).

Every request names the endpoint (`endpoint_name`), as calls through the gateway must; the
baseline ignores it.

Method. The servers are measured one after the other, never at the same time, so each has the
machine to itself apart from the load generator; cells alternate between them (baseline, then
skmaker, then gateway, for each concurrency and row count) so that drifting background load
affects every side; `--rounds N` repeats the whole sequence and reports each cell's median.
The load generator is a separate process (`predict.py loadgen`): at concurrency 1 it makes
blocking calls back to back; at concurrency N it keeps N calls in flight with grpc futures,
issuing the next call from each completion callback, on one channel (as a real client would).
Every cell runs a short warm-up, then `--seconds` of measured calls; latency is measured per call
from issue to completion, and throughput is completed calls / measured seconds. The load
generator reports its own CPU time; a client using well under one core of CPU per wall-clock
second is not the bottleneck (`client_cpu`, 1.0 = one full core). `--clients K` splits the
concurrency over K load-generator processes when one is not enough.

The gateway's latency at concurrency 1 is also measured paired: one load generator alternates a
call straight to the skmaker replica and a call through the gateway (`--seconds` x `--rounds`
in all), so both sides meet the same background load. On this shared 2-core VM the cell ratio
ranged from 1.21 to 1.40 over six runs of one build, while the paired ratio of runs of one build
stayed within 0.03 of each other.

Output: a table, then as the LAST line one JSON object with `latency_ratio_c1` (skmaker p50 /
baseline p50, one row, concurrency 1), `throughput_ratio_c32` (skmaker / baseline requests/s,
one row, concurrency 32), `gateway_latency_ratio_c1` (gateway p50 / direct skmaker p50, one
row, concurrency 1, paired; `gateway_latency_ratio_c1_cells` is the same from the cells),
`gateway_throughput_ratio_c32` (gateway / direct requests/s) and every raw figure.
Targets: ratio_c1 <= 1.25, ratio_c32 >= 0.8, gateway_latency_ratio_c1 <= 1.3.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
ONE_ROW = "5.1,3.5,1.4,0.2"
ENDPOINT = "bench"
SERVE_SCRIPT = """
import os

import joblib


def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))
"""


# --- the baseline server ------------------------------------------------------------------------


def baseline_server(model_dir: Path, port_file: Path, max_workers: int) -> None:
    """A minimal synchronous grpcio server: CSV text -> float array -> model.predict -> JSON."""
    import grpc
    import joblib
    import numpy as np
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    from skmaker.v1 import inference_pb2, inference_pb2_grpc

    model = joblib.load(model_dir / "model.joblib")

    class Baseline(inference_pb2_grpc.InferenceServiceServicer):
        def Predict(self, request: Any, context: Any) -> Any:
            rows = [line.split(",") for line in request.text.splitlines() if line]
            labels = model.predict(np.array(rows, dtype=np.float64))
            return inference_pb2.PredictResponse(
                content_type="application/json", text=json.dumps(labels.tolist())
            )

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers), options=[("grpc.so_reuseport", 0)]
    )
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(Baseline(), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    _write_json(port_file, {"grpc": port})
    server.wait_for_termination()


# --- the load generator -------------------------------------------------------------------------


def _request(rows: int) -> Any:
    from skmaker.v1 import inference_pb2

    base = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5], [4.9, 3.1, 1.5, 0.1]]
    lines = [",".join(map(str, base[i % len(base)])) for i in range(rows)]
    return inference_pb2.PredictRequest(
        endpoint_name=ENDPOINT, content_type="text/csv", text="\n".join(lines) + "\n"
    )


def _call_and_request(channel: Any, rows: int, protocol: str, model: str) -> tuple[Any, Any]:
    """The RPC to drive and its request: skmaker Predict (iris, or `model`'s 20-feature row as
    CSV) or Open Inference V2 ModelInfer (the same row as one FP64 tensor)."""
    from skmaker.v1 import inference_pb2, inference_pb2_grpc, open_inference_pb2_grpc

    if not model:
        return inference_pb2_grpc.InferenceServiceStub(channel).Predict, _request(rows)
    try:
        from peers import PEER_ROW, v2_request
    except ImportError:  # imported as benchmarks.predict
        from benchmarks.peers import PEER_ROW, v2_request
    if protocol == "v2":
        stub = open_inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        return stub.ModelInfer, v2_request(model, rows)
    text = "\n".join([",".join(map(repr, PEER_ROW))] * rows) + "\n"
    request = inference_pb2.PredictRequest(endpoint_name=model, content_type="text/csv", text=text)
    return inference_pb2_grpc.InferenceServiceStub(channel).Predict, request


def loadgen(
    address: str,
    concurrency: int,
    rows: int,
    seconds: float,
    warmup_s: float,
    protocol: str = "predict",
    model: str = "",
) -> dict:
    """Drives Predict (or V2 ModelInfer) at `concurrency` for `seconds`; returns latencies (s)
    and CPU used."""
    import grpc

    channel = grpc.insecure_channel(address)
    call, request = _call_and_request(channel, rows, protocol, model)

    class _Stub:
        Predict = call

    stub = _Stub
    stub.Predict(request, timeout=10)  # connect and check once before timing anything

    def run(duration: float) -> tuple[list[float], int, float]:
        latencies: list[float] = []
        errors = [0]
        clock = time.perf_counter
        started = clock()
        end = started + duration
        if concurrency == 1:
            while True:
                begin = clock()
                stub.Predict(request, timeout=10)
                now = clock()
                latencies.append(now - begin)
                if now >= end:
                    return latencies, errors[0], now - started
        finished = threading.Event()
        outstanding = [concurrency]
        lock = threading.Lock()

        def issue() -> None:
            begin = clock()
            call = stub.Predict.future(request, timeout=10)
            call.add_done_callback(lambda done: complete(done, begin))

        def complete(done: Any, begin: float) -> None:
            now = clock()
            if done.exception() is None:
                latencies.append(now - begin)
            else:
                errors[0] += 1
            if now < end:
                issue()
                return
            with lock:
                outstanding[0] -= 1
                if outstanding[0] == 0:
                    finished.set()

        for _ in range(concurrency):
            issue()
        finished.wait(duration + 30)
        return latencies, errors[0], clock() - started

    run(warmup_s)
    cpu_before = os.times()
    latencies, errors, elapsed = run(seconds)
    cpu_after = os.times()
    channel.close()
    cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    return {"latencies": latencies, "errors": errors, "elapsed": elapsed, "cpu": cpu}


def pairs(address: str, other: str, seconds: float, warmup_s: float) -> dict:
    """Alternates one blocking call to `address` and one to `other` for `seconds`.

    Both sides see the same moments of background load, so the ratio of their medians moves far
    less from run to run on a shared machine than two cells measured one after the other.
    """
    import grpc

    from skmaker.v1 import inference_pb2_grpc

    channels = [grpc.insecure_channel(address), grpc.insecure_channel(other)]
    calls = [inference_pb2_grpc.InferenceServiceStub(c).Predict for c in channels]
    request = _request(1)
    clock = time.perf_counter
    latencies: tuple[list[float], list[float]] = ([], [])
    for phase, duration in (("warm-up", warmup_s), ("measured", seconds)):
        end = clock() + duration
        while clock() < end:
            for side, call in enumerate(calls):
                begin = clock()
                call(request, timeout=10)
                if phase == "measured":
                    latencies[side].append(clock() - begin)
    for channel in channels:
        channel.close()
    return {"latencies": latencies[0], "other_latencies": latencies[1]}


# --- orchestration ------------------------------------------------------------------------------


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def _wait_serving(process: subprocess.Popen[bytes], port_file: Path, name: str) -> int:
    """The gRPC port of a server once it is SERVING (see harness.wait_until_serving)."""
    try:
        from harness import wait_until_serving
    except ImportError:  # imported as benchmarks.predict
        from benchmarks.harness import wait_until_serving
    return int(wait_until_serving(process, port_file, name).rsplit(":", 1)[1])


def _percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def _measure(
    port: int,
    concurrency: int,
    rows: int,
    args: argparse.Namespace,
    protocol: str = "predict",
    model: str = "",
    pin: list[str] | None = None,
) -> dict:
    clients = max(1, min(args.clients, concurrency))
    shares = [
        concurrency // clients + (1 if i < concurrency % clients else 0) for i in range(clients)
    ]
    commands = [
        [
            *(pin or []),
            sys.executable,
            str(Path(__file__).resolve()),
            "loadgen",
            f"--protocol={protocol}",
            f"--peer-model={model}",
            f"--address=127.0.0.1:{port}",
            f"--concurrency={share}",
            f"--rows={rows}",
            f"--seconds={args.seconds}",
            f"--warmup-s={args.warmup_s}",
        ]
        for share in shares
    ]
    children = [
        subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE) for command in commands
    ]
    results = []
    for child in children:
        out, _ = child.communicate(timeout=args.seconds + args.warmup_s + 120)
        if child.returncode != 0:
            raise RuntimeError(f"load generator exited with {child.returncode}")
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    latencies = sorted(v for result in results for v in result["latencies"])
    elapsed = max(result["elapsed"] for result in results)
    return {
        "requests": len(latencies),
        "errors": sum(result["errors"] for result in results),
        "rps": len(latencies) / elapsed,
        "p50_ms": _percentile(latencies, 0.50) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "client_cpu": sum(result["cpu"] for result in results) / elapsed,
    }


def _measure_pairs(direct_port: int, gateway_port: int, args: argparse.Namespace) -> dict:
    """Direct and gateway calls alternated by one load generator (see `pairs`)."""
    seconds = args.seconds * args.rounds
    command = [
        *(sys.executable, str(Path(__file__).resolve()), "pairs"),
        f"--address=127.0.0.1:{direct_port}",
        f"--other-address=127.0.0.1:{gateway_port}",
        f"--seconds={seconds}",
        f"--warmup-s={args.warmup_s}",
    ]
    out = subprocess.run(
        command, cwd=REPO_ROOT, stdout=subprocess.PIPE, check=True, timeout=seconds + 120
    ).stdout
    result = json.loads(out.decode().strip().splitlines()[-1])
    direct, through = sorted(result["latencies"]), sorted(result["other_latencies"])
    return {
        "pairs": len(direct),
        "direct_p50_ms": _percentile(direct, 0.50) * 1000,
        "gateway_p50_ms": _percentile(through, 0.50) * 1000,
        "direct_p99_ms": _percentile(direct, 0.99) * 1000,
        "gateway_p99_ms": _percentile(through, 0.99) * 1000,
    }


def _median_cell(cells: list[dict]) -> dict:
    """One cell's figures over `--rounds`: the median of each, and every round's p50."""
    merged = {key: statistics.median(cell[key] for cell in cells) for key in cells[0]}
    merged["rounds_p50_ms"] = [cell["p50_ms"] for cell in cells]
    return merged


def _prepare_model(folder: Path) -> tuple[Path, Path]:
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier

    model_dir, code_dir = folder / "model", folder / "code"
    model_dir.mkdir()
    code_dir.mkdir()
    iris = load_iris()
    joblib.dump(
        DecisionTreeClassifier(random_state=0).fit(iris.data, iris.target),
        model_dir / "model.joblib",
    )
    (code_dir / "serve.py").write_text(SERVE_SCRIPT)
    return model_dir, code_dir


def main_benchmark(args: argparse.Namespace) -> int:
    if args.gateway_data_plane == "haproxy" and shutil.which("haproxy") is None:
        print(
            "HAProxy is not installed, and the gateway's data plane is HAProxy: run "
            "`make haproxy` (Debian's package) or pass --gateway-data-plane python",
            file=sys.stderr,
        )
        return 2
    with tempfile.TemporaryDirectory(prefix="skmaker-bench-") as tmp:
        folder = Path(tmp)
        model_dir, code_dir = _prepare_model(folder)
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        servers = {
            "baseline": [
                sys.executable,
                str(Path(__file__).resolve()),
                "baseline-server",
                f"--model-dir={model_dir}",
                f"--port-file={folder / 'baseline.port'}",
                f"--max-workers={args.max_workers}",
            ],
            "skmaker": [
                sys.executable,
                "-m",
                "services.inference",
                f"--model-dir={model_dir}",
                f"--code-dir={code_dir}",
                "--entry-point=serve.py",
                f"--endpoint-name={ENDPOINT}",
                "--replica-id=bench-0",
                f"--work-dir={folder / 'work'}",
                "--grpc-port=0",
                "--metrics-port=0",
                f"--port-file={folder / 'skmaker.port'}",
                f"--max-workers={args.max_workers}",
                "--log-level=WARNING",
            ],
        }
        processes: dict[str, subprocess.Popen[bytes]] = {}
        figures: dict[str, dict[str, dict]] = {}
        try:
            ports = {}
            for name, command in servers.items():
                log = (folder / f"{name}.log").open("wb")
                processes[name] = subprocess.Popen(
                    command, cwd=REPO_ROOT, env=env, stdout=log, stderr=log
                )
            for name, process in processes.items():
                ports[name] = _wait_serving(process, folder / f"{name}.port", name)
            # The gateway routes endpoint `bench` to the skmaker replica, so it starts after it.
            log = (folder / "gateway.log").open("wb")
            processes["gateway"] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "services.gateway",
                    f"--routes={ENDPOINT}=127.0.0.1:{ports['skmaker']}",
                    f"--data-plane={args.gateway_data_plane}",
                    "--grpc-port=0",
                    "--metrics-port=0",
                    f"--port-file={folder / 'gateway.port'}",
                    f"--max-workers={max(64, args.max_workers)}",
                    "--log-level=WARNING",
                ],
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=log,
            )
            gateway_port_file = folder / "gateway.port"
            ports["gateway"] = _wait_serving(processes["gateway"], gateway_port_file, "gateway")
            rounds: dict[str, dict[str, list[dict]]] = {name: {} for name in ports}
            # Cells alternate between the servers, so that a change in background load on a
            # shared machine hits both sides of each ratio alike.
            for _ in range(args.rounds):
                for concurrency in (1, 32):
                    for rows in (1, 100):
                        for name in ports:
                            if name == "gateway" and rows != 1:
                                continue
                            cell = _measure(ports[name], concurrency, rows, args)
                            key = f"c{concurrency}_r{rows}"
                            rounds[name].setdefault(key, []).append(cell)
                            print(
                                f"{name:9} c={concurrency:<3} rows={rows:<4} "
                                f"p50={cell['p50_ms']:7.3f} ms  p99={cell['p99_ms']:7.3f} ms  "
                                f"{cell['rps']:8.0f} req/s  client_cpu={cell['client_cpu']:.2f}"
                                + (f"  errors={cell['errors']}" if cell["errors"] else ""),
                                flush=True,
                            )
            figures = {
                name: {key: _median_cell(cells) for key, cells in by_cell.items()}
                for name, by_cell in rounds.items()
            }
            paired = _measure_pairs(ports["skmaker"], ports["gateway"], args)
            print(
                f"paired    c=1   rows=1    direct p50={paired['direct_p50_ms']:7.3f} ms  "
                f"gateway p50={paired['gateway_p50_ms']:7.3f} ms  ({paired['pairs']} pairs)",
                flush=True,
            )
        finally:
            for process in processes.values():
                process.terminate()
            for process in processes.values():
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
    base, ours, gateway = figures["baseline"], figures["skmaker"], figures["gateway"]
    summary = {
        "gateway_latency_ratio_c1": paired["gateway_p50_ms"] / paired["direct_p50_ms"],
        "gateway_latency_ratio_c1_cells": gateway["c1_r1"]["p50_ms"] / ours["c1_r1"]["p50_ms"],
        "gateway_paired_c1": paired,
        "gateway_throughput_ratio_c32": gateway["c32_r1"]["rps"] / ours["c32_r1"]["rps"],
        "gateway_data_plane": args.gateway_data_plane,
        "rounds": args.rounds,
        "latency_ratio_c1": ours["c1_r1"]["p50_ms"] / base["c1_r1"]["p50_ms"],
        "throughput_ratio_c32": ours["c32_r1"]["rps"] / base["c32_r1"]["rps"],
        "latency_ratio_c1_r100": ours["c1_r100"]["p50_ms"] / base["c1_r100"]["p50_ms"],
        "throughput_ratio_c32_r100": ours["c32_r100"]["rps"] / base["c32_r100"]["rps"],
        "seconds_per_cell": args.seconds,
        "cpus": os.cpu_count(),
        "baseline": base,
        "skmaker": ours,
        "gateway": gateway,
    }
    print()
    print(
        "        cell         baseline p50/p99 ms  req/s | skmaker p50/p99 ms  req/s"
        " | gateway p50/p99 ms  req/s"
    )
    for cell in base:
        b, o = base[cell], ours[cell]
        g = gateway.get(cell)
        print(
            f"{cell:>12}   {b['p50_ms']:7.3f} {b['p99_ms']:7.3f} {b['rps']:7.0f}"
            f" | {o['p50_ms']:7.3f} {o['p99_ms']:7.3f} {o['rps']:7.0f}"
            + (f" | {g['p50_ms']:7.3f} {g['p99_ms']:7.3f} {g['rps']:7.0f}" if g else "")
        )
    if args.peers:
        try:
            from peers import measure_peers
        except ImportError:  # imported as benchmarks.predict
            from benchmarks.peers import measure_peers
        summary.update(measure_peers(args, _measure, _wait_serving))
    print(json.dumps(summary, sort_keys=True))
    return 0


def main() -> int:
    """Parses the command line: the benchmark by default, or one of its child roles."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument(
        "role",
        nargs="?",
        default="bench",
        choices=["bench", "loadgen", "pairs", "baseline-server", "inprocess"],
    )
    parser.add_argument(
        "--peers",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure decision tree, forest and HistGradientBoosting models against the "
        "raw grpcio baseline, skmaker with the fast path off, and MLServer (benchmarks/peers.py)",
    )
    parser.add_argument("--protocol", choices=("predict", "v2"), default="predict")
    parser.add_argument("--peer-model", default="", help="loadgen: a peers model's name")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per cell")
    parser.add_argument("--warmup-s", type=float, default=1.0, help="unmeasured seconds per cell")
    parser.add_argument("--clients", type=int, default=1, help="load-generator processes")
    parser.add_argument("--rounds", type=int, default=1, help="repeat every cell, report medians")
    parser.add_argument("--max-workers", type=int, default=32, help="server RPC threads")
    parser.add_argument(
        "--gateway-data-plane",
        choices=("haproxy", "python"),
        default="haproxy",
        help="who forwards the gateway row's calls",
    )
    parser.add_argument("--address", default="")
    parser.add_argument("--other-address", default="")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--model-dir", default="")
    parser.add_argument("--port-file", default="")
    args = parser.parse_args()
    if args.role == "inprocess":
        try:
            from peers import inprocess_latency
        except ImportError:  # imported as benchmarks.predict
            from benchmarks.peers import inprocess_latency
        print(json.dumps(inprocess_latency(Path(args.model_dir), args.seconds)))
        return 0
    if args.role == "loadgen":
        result = loadgen(
            args.address,
            args.concurrency,
            args.rows,
            args.seconds,
            args.warmup_s,
            args.protocol,
            args.peer_model,
        )
        print(json.dumps(result))
        return 0
    if args.role == "pairs":
        print(json.dumps(pairs(args.address, args.other_address, args.seconds, args.warmup_s)))
        return 0
    if args.role == "baseline-server":
        baseline_server(Path(args.model_dir), Path(args.port_file), args.max_workers)
        return 0
    return main_benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
