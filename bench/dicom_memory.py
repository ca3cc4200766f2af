"""Memory of DICOM receipt against the size of what is received (issue #19: "a 2 GB
study does not exhaust memory"). Starts a real gunicorn web and a `scanq
dicom-listener` on a scratch data directory, sends one study of synthetic CT instances
(random pixels, never the development data) by STOW-RS in one chunked request and by
C-STORE in one association, and samples the resident memory of the receiving
processes meanwhile. Prints the study's size, each receiver's peak memory growth and
their ratio: a receiver that held the body or an instance whole would grow by it.

    python -m bench.dicom_memory --mb 1024 --instance-mb 8
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pydicom
import requests

from bench import OUT
from cli.processes import listener_command, web_command

ROOT = Path(__file__).resolve().parents[1]
BOUNDARY = "scanq-bench-boundary"


def instance(study_uid: str, series_uid: str, number: int, side: int, frames: int) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.Modality, ds.PatientID, ds.InstanceNumber = "CT", "BENCH", number
    ds.Rows = ds.Columns = side
    ds.NumberOfFrames = frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1.0, -1024.0
    rng = np.random.default_rng(number)
    ds.PixelData = rng.integers(0, 4096, (frames, side, side), dtype=np.uint16).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


class Sampler(threading.Thread):
    """Peak resident memory (MB) of a process and its children, sampled every 20 ms."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.base = self.rss()
        self.peak = self.base
        self.running = True

    def rss(self) -> float:
        procs = [self.proc, *self.proc.children(recursive=True)]
        total = 0
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += p.memory_info().rss
        return total / 2**20

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.rss())
            time.sleep(0.02)

    def stop(self) -> float:
        self.running = False
        self.join()
        return self.peak - self.base


def wait_http(url: str) -> None:
    for _ in range(300):
        try:
            if requests.get(url + "/healthz", timeout=2).status_code in (200, 503):
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError("web did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1024, help="study size, MB")
    parser.add_argument("--instance-mb", type=int, default=8, help="size of one instance")
    args = parser.parse_args()
    from pydicom.uid import generate_uid
    from pynetdicom import AE

    from scanq.embedded_redis import free_port

    frames = max(1, args.instance_mb * 2**20 // (512 * 512 * 2))
    count = max(1, args.mb // args.instance_mb)
    tmp = Path(tempfile.mkdtemp(prefix="scanq-bench-dicom-"))
    port, dicom_port = free_port(), free_port()
    env = dict(
        os.environ,
        SCANQ_DATA_DIR=str(tmp),
        SCANQ_PORT=str(port),
        SCANQ_DICOM_PORT=str(dicom_port),
        REDIS_URL="redis://127.0.0.1:1/0",
        SCANQ_STUDY_SETTLE="100000",
    )

    def run(*a, **kw):
        return subprocess.run(
            [sys.executable, "-m", "cli.main", *a],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            **kw,
        )

    assert run("migrate").returncode == 0
    token = run("token", "create", "--user", "bench", "--admin").stdout.strip()
    assert (
        run(
            "dicom", "peer", "add", "BENCH", "--host", "127.0.0.1", "--port", "1", "--user", "bench"
        ).returncode
        == 0
    )
    web = subprocess.Popen(
        web_command(port, workers=1),
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    listener = subprocess.Popen(
        listener_command(), env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    report = {
        "study_mb": count * frames * 512 * 512 * 2 / 2**20,
        "instances": count,
        "instance_mb": frames * 512 * 512 * 2 / 2**20,
    }
    try:
        wait_http(f"http://127.0.0.1:{port}")
        time.sleep(2)
        study_uid, series_uid = generate_uid(), generate_uid()

        def body():
            for i in range(count):
                yield (f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n").encode()
                yield instance(study_uid, series_uid, i, 512, frames)
                yield b"\r\n"
            yield f"--{BOUNDARY}--\r\n".encode()

        sampler = Sampler(web.pid)
        sampler.start()
        t0 = time.perf_counter()
        resp = requests.post(
            f"http://127.0.0.1:{port}/dicomweb/studies",
            data=body(),
            timeout=3600,
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
            },
        )
        report["stow_seconds"] = round(time.perf_counter() - t0, 1)
        report["stow_peak_growth_mb"] = round(sampler.stop(), 1)
        report["stow_status"] = resp.status_code
        referenced = resp.json().get("00081199", {}).get("Value", [])
        report["stow_stored"] = len(referenced)

        study_uid, series_uid = generate_uid(), generate_uid()
        ae = AE(ae_title="BENCH")
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2")
        assoc = ae.associate("127.0.0.1", dicom_port, ae_title="SCANQ")
        sampler = Sampler(listener.pid)
        sampler.start()
        t0 = time.perf_counter()
        ok = 0
        for i in range(count):
            ds_bytes = instance(study_uid, series_uid, i, 512, frames)
            ds = pydicom.dcmread(io.BytesIO(ds_bytes))
            ok += assoc.send_c_store(ds).Status == 0
            del ds, ds_bytes
        assoc.release()
        report["cstore_seconds"] = round(time.perf_counter() - t0, 1)
        report["cstore_peak_growth_mb"] = round(sampler.stop(), 1)
        report["cstore_stored"] = ok
    finally:
        for proc in (web, listener):
            proc.terminate()
            proc.wait(30)
    report["stow_growth_per_study_size"] = round(
        report["stow_peak_growth_mb"] / report["study_mb"], 4
    )
    report["cstore_growth_per_study_size"] = round(
        report["cstore_peak_growth_mb"] / report["study_mb"], 4
    )
    print(json.dumps(report, indent=2))
    OUT.mkdir(exist_ok=True)
    (OUT / "dicom_memory.json").write_text(json.dumps(report, indent=2))
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
