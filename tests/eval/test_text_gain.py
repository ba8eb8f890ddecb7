"""The text-gain report of an exported teacher: seeded and repeatable, the head-loss gap with and
without the text, items spread over the manifest, and the ``text-gain`` sub-command."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pockettts.data.manifest import read_manifest, write_manifest
from pockettts.eval.runner import spread
from pockettts.eval.text_gain import text_gain
from pockettts.tools.__main__ import main
from pockettts.training.teacher_module import export_flow_lm
from tests.support import tiny_teacher_module


def test_text_gain_report_of_an_export_is_repeatable_and_the_loss_gap(teacher_data, tmp_path):
    data = teacher_data()
    data.prepare_data()
    data.setup("fit")
    module = tiny_teacher_module()
    with torch.no_grad():  # AdaLN-zero: at init the head ignores z, so nothing could depend on the text
        for parameter in module.model.head.parameters():
            parameter.normal_(0.0, 0.2)
    path = export_flow_lm(module.model, tmp_path / "export" / "teacher.safetensors", data)
    rng = torch.get_rng_state()
    report = text_gain(path, data.valid_manifest, data.cache_dir, limit=3, draws=2, batch_size=2)
    assert torch.equal(rng, torch.get_rng_state())  # seeded draws, the global RNG untouched
    again = text_gain(path, data.valid_manifest, data.cache_dir, limit=3, draws=2, batch_size=2)
    assert report == again and report["items"] == 3
    assert report["text_gain"] == report["head_loss_without_text"] - report["head_loss"] != 0
    # --spread: the items spread over the manifest, the same as a manifest of just those items
    # (written beside it: audio paths are relative to the manifest's folder).
    manifest = Path(data.train_manifest)
    items = read_manifest(manifest)
    assert spread(len(items), 2) != [0, 1]
    picked = write_manifest(
        manifest.with_name(f"picked_{tmp_path.name}.jsonl"), [items[i] for i in spread(len(items), 2)]
    )
    try:
        spread_report = text_gain(path, manifest, data.cache_dir, limit=2, draws=2, spread_items=True)
        subset_report = text_gain(path, picked, data.cache_dir, draws=2)
    finally:
        picked.unlink()
    first_report = text_gain(path, manifest, data.cache_dir, limit=2, draws=2)
    assert spread_report["selection"] == "spread" and first_report["selection"] == "first"
    assert spread_report["text_gain"] == pytest.approx(subset_report["text_gain"], rel=1e-6, abs=1e-9)
    assert spread_report["text_gain"] != first_report["text_gain"]
    args = ["--teacher", str(path), "--manifest", str(data.valid_manifest), "--cache", str(data.cache_dir)]
    assert main(["text-gain", *args, "--limit", "1", "--draws", "1", "--spread"]) == 0
