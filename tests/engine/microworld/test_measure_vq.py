"""scripts/measure_vq.py: the VQ's round trip read from an exported model and from a training work folder alike,
its misreadings adding up to the errors it reports."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

from engine.microworld.pretrain import ENCODER_FILE, EXPORTED_PREFIX

ROOT = Path(__file__).resolve().parents[3]
DEMO = ROOT / "resources" / "demo-model"


def measure(folder: Path, output: Path) -> dict:
    command = [sys.executable, str(ROOT / "scripts" / "measure_vq.py"), str(folder), "--count", "40", "--threads", "1"]
    subprocess.run(
        [*command, "-o", str(output)], check=True, cwd=ROOT, capture_output=True, env={"PYTHONPATH": str(ROOT)}
    )
    return json.loads(output.read_text())


def test_an_export_and_a_work_folder_with_the_same_vq_measure_the_same(tmp_path: Path) -> None:
    exported = measure(DEMO, tmp_path / "export.json")
    work = tmp_path / "work"
    work.mkdir()
    weights = load_file(DEMO / "model.safetensors")
    encoder = {k[len(EXPORTED_PREFIX) :]: v for k, v in weights.items() if k.startswith(EXPORTED_PREFIX)}
    save_file(encoder, work / ENCODER_FILE)
    shutil.copy(DEMO / "vqgan_decoder.safetensors", work / "vqgan_decoder.safetensors")
    from_work = measure(work, tmp_path / "work.json")
    assert from_work["round_trip"] == exported["round_trip"]
    assert exported["raw"]["identity_exact"] >= 0.95  # the reader itself reads renders
    for attribute, misread in exported["misread"].items():
        errors = round(40 * (1 - exported["round_trip"][attribute]))
        assert sum(misread.values()) <= errors and (len(misread) == 6 or sum(misread.values()) == errors)
        assert all(" as " in k and k.split(" as ")[0] != k.split(" as ")[1] for k in misread)
