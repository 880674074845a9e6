"""utils.run_logging: log file + TensorBoard on rank 0, quiet other ranks, NaN/inf detection."""

from __future__ import annotations

import math

import pytest
import torch

from utils.run_logging import NonFiniteLossError, RunLogger, check_finite, progress


def test_check_finite_names_step_and_terms():
    check_finite(3, {"l1": torch.tensor(0.5), "w": 1.0, "map": torch.ones(2, 2)})
    with pytest.raises(NonFiniteLossError) as info:
        check_finite(
            120,
            {
                "l1": torch.tensor(0.25),
                "photo": torch.tensor(float("nan")),
                "lap": math.inf,
                "map": torch.tensor([1.0, float("inf")]),
            },
        )
    text = str(info.value)
    assert "step 120" in text and "photo=nan" in text and "lap=inf" in text and "map=" in text
    assert "finite terms: l1=0.25" in text


def test_run_logger_writes_log_and_tensorboard(tmp_path, capsys):
    with RunLogger(tmp_path / "run") as log:
        log.info("hello %d", 7)
        log.log_losses(5, {"l1": torch.tensor(0.125), "total": 0.5})
        log.log_image("vis", torch.rand(3, 8, 8), 5)
        assert list(log.progress(range(3), "x", enabled=False)) == [0, 1, 2]
    text = (tmp_path / "run" / "log.txt").read_text()
    assert "hello 7" in text and "train step 5: l1=0.125  total=0.5" in text
    assert "hello 7" in capsys.readouterr().out
    assert any((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


def test_non_main_rank_writes_nothing(tmp_path):
    log = RunLogger(tmp_path / "run1", rank=1)
    log.info("invisible")
    log.log_losses(1, {"l1": 0.1})
    log.close()
    assert not (tmp_path / "run1").exists()
    assert list(progress([1, 2], enabled=True)) == [1, 2]
