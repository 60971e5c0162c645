"""A run with its trigger stamped at the dataset's stored size (``trigger.stage: native``)."""

import json

import pytest
import torch

from triggerlab.config import load_config
from triggerlab.data.prepare import model_input_images
from triggerlab.run.experiment import run_experiment
from triggerlab.run.prepare import prepare
from triggerlab.run.stages import trigger_test_set

pytestmark = pytest.mark.slow  # trains

SETTINGS = [
    "train.epochs=1",
    "train.device=cpu",
    "model.options={width: 4, hidden: 16}",
    "trigger.size=0.08",  # of the digits' stored 8 px: int(0.64) = 0, so one pixel
    "trigger.stage=native",
]


def test_a_native_stage_run_triggers_the_stored_images_and_records_its_stage(tmp_path):
    cfg = load_config(None, [*SETTINGS, f"output.directory={tmp_path}", "output.name=r"])
    ctx = prepare(cfg)
    assert ctx.data.shape == (1, 16, 16) and ctx.stamping.shape == (1, 8, 8)
    test = ctx.data.test
    native = ctx.stamping.pool[test.pool_index].clone()
    native[:, :, -1:, -1:] = 255  # one stored pixel in the bottom-right corner
    expected = model_input_images(native, cfg.data)
    assert torch.equal(trigger_test_set(ctx), expected)
    changed = (expected != test.images).flatten(1).sum(dim=1)
    assert int(changed.max()) <= 9  # one stored pixel upsampled 2x in a corner: 3x3 changed
    summary = run_experiment(cfg).summary
    assert summary["trigger"]["stage"] == "native"
    assert summary["trigger_stamping"] == {"stage": "native", "stamped_shape": [1, 8, 8]}
    saved = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert saved["trigger_stamping"] == summary["trigger_stamping"]
