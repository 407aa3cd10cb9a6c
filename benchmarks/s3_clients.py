"""S3 client libraries for the repository on S3: obstore (what fctui uses) against boto3, both with their
default settings, on a local SeaweedFS (tests/servers.py's S3Server) or on the store the AWS_* variables
name (--external). Each library PUTs then GETs the same chunks from 8 threads, then HEADs one object
sequentially. Prints a table: MB/s (1 MB = 10^6 bytes), this process's CPU seconds per GiB moved (the
server's CPU is not counted), HEAD latency (median and 95th percentile).

    .venv/bin/python benchmarks/s3_clients.py [--mib 256] [--chunk-mib 4] [--threads 8] [--heads 300]

boto3 is not a dependency of fctui: `make bench` installs it (the `bench` extra), or
`.venv/bin/pip install -e '.[bench]'`.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GIB = 1024 ** 3


@dataclass
class Client:
    """One library's three operations on one bucket, as a caller of that library writes them."""
    name: str
    put: Callable[[str, bytes], None]
    get: Callable[[str], Any]   # bytes or a buffer (obstore's Bytes: no copy, hashlib reads it)
    head: Callable[[str], Any]


def obstore_client(bucket: str) -> Client:
    import obstore
    from obstore.store import S3Store
    # S3Store reads AWS_ENDPOINT_URL, the keys, AWS_REGION and AWS_ALLOW_HTTP from the environment
    store = S3Store(bucket)
    return Client("obstore", put=lambda k, b: obstore.put(store, k, b),
                  get=lambda k: obstore.get(store, k).bytes(), head=lambda k: obstore.head(store, k))


def boto3_client(bucket: str, threads: int) -> Client | None:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        print("boto3 is not installed: `make bench` installs it (or .venv/bin/pip install -e '.[bench]'); "
              "measuring obstore only", file=sys.stderr)
        return None
    # One client shared by the threads (boto3 clients are thread-safe), its pool as large as the threads;
    # the endpoint, keys and region come from the AWS_* variables as for obstore.
    s3 = boto3.session.Session().client("s3", config=Config(max_pool_connections=max(10, threads)))
    return Client(f"boto3 {boto3.__version__}",
                  put=lambda k, b: s3.put_object(Bucket=bucket, Key=k, Body=b),
                  get=lambda k: s3.get_object(Bucket=bucket, Key=k)["Body"].read(),
                  head=lambda k: s3.head_object(Bucket=bucket, Key=k))


@dataclass
class Result:
    name: str
    put_mbs: float
    put_cpu_per_gib: float
    get_mbs: float
    get_cpu_per_gib: float
    head_median_ms: float
    head_p95_ms: float


def timed(pool: ThreadPoolExecutor, fn: Callable[[Any], Any], items: list[Any]) -> tuple[float, float]:
    """Wall and CPU seconds (this process, all threads) to run fn over items on the pool."""
    t0, c0 = time.perf_counter(), time.process_time()
    list(pool.map(fn, items))
    return time.perf_counter() - t0, time.process_time() - c0


def measure(client: Client, chunks: list[bytes], n: int, threads: int, heads: int) -> Result:
    prefix = f"bench-{client.name.split()[0]}-{secrets.token_hex(4)}"
    keys = [f"{prefix}/chunks/{i:06d}" for i in range(n)]
    size = len(chunks[0])
    total = n * size
    with ThreadPoolExecutor(threads) as pool:
        client.put(keys[0], chunks[0])   # warm up: connection, credentials, first request
        client.get(keys[0])
        put_wall, put_cpu = timed(pool, lambda i: client.put(keys[i], chunks[i % len(chunks)]), list(range(n)))

        def get(i: int) -> None:
            if len(client.get(keys[i])) != size:
                raise RuntimeError(f"{client.name}: short read of {keys[i]}")
        get_wall, get_cpu = timed(pool, get, list(range(n)))
    latencies = []
    for _ in range(heads):
        t0 = time.perf_counter()
        client.head(keys[0])
        latencies.append(time.perf_counter() - t0)
    latencies.sort()
    return Result(client.name, total / put_wall / 1e6, put_cpu / (total / GIB), total / get_wall / 1e6,
                  get_cpu / (total / GIB), statistics.median(latencies) * 1e3,
                  latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))] * 1e3)


def print_table(results: list[Result], n: int, chunk: int, threads: int, where: str) -> None:
    print(f"{n} chunks of {chunk // 2**20} MiB ({n * chunk / 2**20:.0f} MiB) from {threads} threads, {where}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'client':<16} {'PUT MB/s':>9} {'PUT CPU s/GiB':>14} {'GET MB/s':>9} {'GET CPU s/GiB':>14} "
          f"{'HEAD ms (median/p95)':>21}")
    for r in results:
        print(f"{r.name:<16} {r.put_mbs:>9.0f} {r.put_cpu_per_gib:>14.2f} {r.get_mbs:>9.0f} "
              f"{r.get_cpu_per_gib:>14.2f} {f'{r.head_median_ms:.2f} / {r.head_p95_ms:.2f}':>21}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=256, help="data PUT and GET per library (default 256 MiB)")
    ap.add_argument("--chunk-mib", type=int, default=4, choices=(2, 3, 4), help="chunk size (default 4 MiB)")
    ap.add_argument("--threads", type=int, default=8, help="threads doing PUTs and GETs (default 8)")
    ap.add_argument("--heads", type=int, default=300, help="sequential HEADs timed (default 300)")
    ap.add_argument("--external", metavar="BUCKET", default=None,
                    help="use this bucket of the store the AWS_* variables name instead of a local SeaweedFS")
    args = ap.parse_args()
    chunk = args.chunk_mib * 2**20
    n = max(args.threads, args.mib * 2**20 // chunk)
    # Distinct random chunks (incompressible, as zstd leaves a backup's data), reused round-robin
    chunks = [os.urandom(chunk) for _ in range(min(n, 16))]

    def run(bucket: str, where: str) -> None:
        clients = [c for c in (obstore_client(bucket), boto3_client(bucket, args.threads)) if c is not None]
        results = [measure(c, chunks, n, args.threads, args.heads) for c in clients]
        print_table(results, n, chunk, args.threads, where)

    if args.external:
        run(args.external, f"store {os.environ.get('AWS_ENDPOINT_URL', '(AWS)')}")
        return 0
    from tests.servers import S3Server, ServerUnavailable
    try:
        server = S3Server().start()
    except ServerUnavailable as e:
        print(f"no local SeaweedFS: {e}", file=sys.stderr)
        return 1
    try:
        os.environ.update(server.env)
        run(server.bucket, "local SeaweedFS (weed mini, same machine)")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
