"""Load and soak on the real local stack, loopback only, bounded in time and requests.

Load: 5 clients submit bulk jobs of real chest X-rays while 50 clients poll job status
(as 50 open job pages would) until every job has ended. Reports status-endpoint latency
(p50/p95/p99), any 5xx or failed request, and checks that every submitted image was
scored exactly once.

Soak: one job of --soak-images images, sampling the inference worker's resident memory;
reports memory after the warm-up and at the end, and the growth per 1,000 images.

    python -m bench.load                    # load, then a 10,000-image soak
    python -m bench.load --soak-images 0    # load only

Writes bench/out/load.json. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests

from bench import DEFAULT_DATA, OUT
from bench.stack import LocalStack
from cli.client import FINAL_STATUSES


def run_load(stack: LocalStack, images: list[Path], args) -> dict:
    job_ids: list[str] = []
    lock = threading.Lock()
    submitted = {"images": 0, "errors": 0}
    latencies: list[float] = []
    failures = {"5xx": 0, "other": 0}
    stop = threading.Event()
    deadline = time.monotonic() + args.max_seconds

    def submitter(k: int) -> None:
        rng = random.Random(k)
        for _ in range(args.jobs_per_submitter):
            files = rng.sample(images, args.images_per_job)
            try:
                job_id, _start, _upload = stack.submit(files)
            except requests.RequestException:
                with lock:
                    submitted["errors"] += 1
                continue
            with lock:
                job_ids.append(job_id)
                submitted["images"] += len(files)

    def poller(k: int) -> None:
        rng = random.Random(1000 + k)
        session = stack.session()
        sent = 0
        while not stop.is_set() and sent < args.max_requests_per_poller:
            with lock:
                target = rng.choice(job_ids) if job_ids else None
            if target is None:
                time.sleep(0.05)
                continue
            t0 = time.perf_counter()
            try:
                code = session.get(f"{stack.url}/api/v1/jobs/{target}", timeout=10).status_code
            except requests.RequestException:
                code = 0
            ms = (time.perf_counter() - t0) * 1000
            with lock:
                latencies.append(ms)
                if code >= 500:
                    failures["5xx"] += 1
                elif code != 200:
                    failures["other"] += 1
            sent += 1
            stop.wait(args.poll_interval)

    submitters = [threading.Thread(target=submitter, args=(k,)) for k in range(args.submitters)]
    pollers = [threading.Thread(target=poller, args=(k,), daemon=True)
               for k in range(args.pollers)]  # fmt: skip
    t0 = time.perf_counter()
    for t in submitters + pollers:
        t.start()
    for t in submitters:
        t.join()
    while time.monotonic() < deadline:
        states = [
            stack.http.get(f"{stack.url}/api/v1/jobs/{j}", timeout=30).json() for j in job_ids
        ]
        if all(s["status"] in FINAL_STATUSES for s in states):
            break
        time.sleep(1)
    stop.set()
    for t in pollers:
        t.join(15)
    elapsed = time.perf_counter() - t0
    states = [stack.http.get(f"{stack.url}/api/v1/jobs/{j}", timeout=30).json() for j in job_ids]
    scored = sum(s["done"] for s in states)
    lat = np.asarray(latencies)
    return {
        "submitters": args.submitters,
        "pollers": args.pollers,
        "jobs": len(job_ids),
        "images_submitted": submitted["images"],
        "submit_errors": submitted["errors"],
        "images_scored": scored,
        "images_failed": sum(s["failed"] for s in states),
        "all_jobs_succeeded": all(s["status"] == "succeeded" for s in states),
        "every_image_scored": scored == submitted["images"],
        "seconds": round(elapsed, 1),
        "status_requests": int(lat.size),
        "status_5xx": failures["5xx"],
        "status_other_errors": failures["other"],
        "status_latency_ms": {
            q: round(float(np.percentile(lat, p)), 1)
            for q, p in (("p50", 50), ("p95", 95), ("p99", 99))
        }
        if lat.size
        else {},
    }


def run_soak(stack: LocalStack, images: list[Path], n: int) -> dict:
    warm, _s, _u = stack.submit(images[:32])
    stack.wait(warm)
    start_kb = stack.inference_worker_rss_kb()
    files = [images[i % len(images)] for i in range(n)]
    job_id, t_start, _u = stack.submit(files)
    samples = []
    while True:
        job = stack.http.get(f"{stack.url}/api/v1/jobs/{job_id}", timeout=30).json()
        samples.append((job["done"] + job["failed"], stack.inference_worker_rss_kb()))
        if job["status"] in FINAL_STATUSES:
            break
        time.sleep(2)
    done = np.asarray([s[0] for s in samples], float)
    rss = np.asarray([s[1] for s in samples], float)
    # Slope over the second half only: the first batches still fill caches and pools.
    half = done >= done[-1] / 2
    slope = np.polyfit(done[half], rss[half], 1)[0] * 1000 if half.sum() >= 3 else None
    return {
        "images": n,
        "scored": int(job["done"]),
        "seconds": round(time.time() - t_start, 1),
        "worker_rss_mb_after_warmup": round(start_kb / 1024, 1),
        "worker_rss_mb_peak": round(rss.max() / 1024, 1),
        "worker_rss_mb_end": round(rss[-1] / 1024, 1),
        "growth_mb_per_1000_images_second_half": None if slope is None else round(slope / 1024, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("SCANQ_SHARED_DATA", str(DEFAULT_DATA)))
    ap.add_argument("--submitters", type=int, default=5)
    ap.add_argument("--jobs-per-submitter", type=int, default=2)
    ap.add_argument("--images-per-job", type=int, default=100)
    ap.add_argument("--pollers", type=int, default=50)
    ap.add_argument("--poll-interval", type=float, default=0.2, help="seconds between polls")
    ap.add_argument("--max-requests-per-poller", type=int, default=5000)
    ap.add_argument("--max-seconds", type=float, default=900)
    ap.add_argument("--soak-images", type=int, default=10_000)
    args = ap.parse_args()
    images = sorted((Path(args.data) / "xray" / "dev").rglob("*.png"))
    if not images:
        raise SystemExit(f"no images under {args.data}/xray/dev")
    report = {}
    with (
        tempfile.TemporaryDirectory(prefix="scanq-load-") as tmp,
        LocalStack(Path(tmp), batch_size=32) as stack,
    ):
        report["load"] = run_load(stack, images, args)
        print(json.dumps(report["load"]), flush=True)
        if args.soak_images:
            report["soak"] = run_soak(stack, images, args.soak_images)
            print(json.dumps(report["soak"]), flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "load.json").write_text(json.dumps(report, indent=2) + "\n")
    load = report["load"]
    print(f"status p99 = {load['status_latency_ms'].get('p99')} ms over "
          f"{load['status_requests']} requests, 5xx = {load['status_5xx']}, "
          f"every image scored = {load['every_image_scored']}")  # fmt: skip


if __name__ == "__main__":
    main()
