"""Progress lines in job logs: training, attacks and certification report done/total, rate and time left."""
import re

import torch
from torch import nn

from robust_mim.certify import Smooth, certify_dataset
from robust_mim.engine import TrainConfig, fit
from robust_mim.evaluation.suite import run_suite
from robust_mim.progress import Progress, format_duration

LINE = re.compile(r"^(\w+) (\d+)% \((\d+)/(\d+) (\w+)\) ([\d.e+]+) \w+/s, (.+ left|done in .+)$")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_line_every_five_percent_with_rate_and_time_left():
    clock, lines = FakeClock(), []
    progress = Progress(200, lines.append, "train", "steps", clock=clock)
    for _ in range(200):
        clock.now += 0.5  # 2 steps/s
        progress.update()
    assert len(lines) == 20
    assert lines[0] == "train 5% (10/200 steps) 2 steps/s, 1m35s left"
    assert lines[9] == "train 50% (100/200 steps) 2 steps/s, 50s left"
    assert lines[-1] == "train 100% (200/200 steps) 2 steps/s, done in 1m40s"
    assert all(LINE.match(line) for line in lines)


def test_slow_units_log_every_interval_between_thresholds():
    clock, lines = FakeClock(), []
    progress = Progress(1000, lines.append, "certify", "images", interval_s=60, clock=clock)
    for _ in range(10):  # 1 % of the work, 10 minutes
        clock.now += 60
        progress.update()
    assert len(lines) == 10
    assert lines[-1].startswith("certify 1% (10/1000 images)") and lines[-1].endswith("16h30m00s left")


def test_nothing_after_the_end_and_nothing_for_empty_work():
    lines = []
    progress = Progress(3, lines.append, "x", "units", every=0.5)
    for _ in range(5):
        progress.update()
    Progress(0, lines.append, "y", "units").update()
    assert [line.split(" (")[0] for line in lines] == ["x 67%", "x 100%"]


def test_format_duration():
    assert [format_duration(s) for s in (7.2, 65, 3725)] == ["7s", "1m05s", "1h02m05s"]


def test_training_logs_progress_over_all_epochs(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    data = torch.utils.data.TensorDataset(torch.randn(64, 4), torch.randint(0, 2, (64,)))

    def step(m, x, y):
        return nn.functional.cross_entropy(m(x), y), {}
    lines = []
    fit(model, step, data, TrainConfig(epochs=2, batch_size=16, lr=1e-2), tmp_path, device=torch.device("cpu"),
        log=lines.append)
    progress = [line for line in lines if line.startswith("train ")]
    assert progress[0].startswith("train 12% (1/8 steps)")
    assert progress[-1].startswith("train 100% (8/8 steps)") and "done in" in progress[-1]
    assert any(line.endswith(" left") for line in progress)


def test_attack_suite_logs_progress_over_attacked_batches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3)).eval()
    x, y = torch.rand(10, 3, 4, 4), torch.randint(0, 3, (10,))
    suite = [{"name": "fgsm", "attack": "fgsm", "threat_model": "white-box", "eps": [0.0, 0.1, 0.2], "batch_size": 4},
             {"name": "pgd", "attack": "pgd", "threat_model": "white-box", "eps": [0.1], "steps": 2, "batch_size": 5}]
    lines = []
    run_suite(model, x, y, suite, log=lines.append)
    # fgsm: 2 non-zero eps x 3 batches of 4; pgd: 1 eps x 2 batches of 5 -> 8 batches
    assert lines[0].startswith("attack 12% (1/8 batches)")
    assert lines[-1].startswith("attack 100% (8/8 batches)")
    assert run_suite(model, x, y, suite) is not None  # no log: silent, still runs


def test_certify_dataset_counts_certified_images():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2)).eval()
    x, y = torch.rand(4, 3, 4, 4), torch.zeros(4, dtype=torch.long)
    lines = []
    certify_dataset(Smooth(model, 2, 0.25), x, y, 10, 20, 0.01, 20,
                    progress=Progress(len(y), lines.append, "certify", "images", every=0.25))
    assert [line.split(")")[0] for line in lines] == [f"certify {25 * i}% ({i}/4 images" for i in range(1, 5)]
