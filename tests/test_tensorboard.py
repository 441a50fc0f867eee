"""ebm.callbacks.TensorBoard and ``ebm train --tensorboard``: the event files hold the tags."""

import pytest

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import ebm
from ebm import cli
from ebm.callbacks import TensorBoard
from ebm.datasets import digits

pytestmark = pytest.mark.usefixtures("one_thread")


def read_events(log_dir):
    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "histograms": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def test_every_metric_each_epoch_and_model_images_every_n(tmp_path):
    x, _ = digits()
    train, test = x[:300], x[300:400]
    callback = TensorBoard(tmp_path / "tb", every=2)
    history = ebm.fit(
        ebm.RBM(64, 9, seed=0), {"v": train}, epochs=3, batch_size=50, validation={"v": test}, callbacks=[callback]
    )
    callback.close()
    events = read_events(tmp_path / "tb")
    tags = events.Tags()
    metrics = {k for entry in history for k in entry if k != "epoch"}
    assert {"loss", "time", "log_likelihood", "val_log_likelihood", "pseudo_ll", "recon"} <= metrics
    assert set(tags["scalars"]) == {f"metrics/{k}" for k in metrics} | {"metrics/lr"}
    for name in metrics:
        scalars = events.Scalars(f"metrics/{name}")
        assert [s.step for s in scalars] == [1, 2, 3]
        assert [s.value for s in scalars] == pytest.approx(history[name], rel=1e-6)
    # samples, filters and histograms after epoch 1 and every 2nd epoch
    assert set(tags["histograms"]) == {"parameters/W", "parameters/a", "parameters/b"}
    assert [h.step for h in events.Histograms("parameters/W")] == [1, 2]
    assert {"samples/v", "filters"} <= set(tags["images"])
    filters = events.Images("filters")
    assert [i.step for i in filters] == [1, 2]
    assert (filters[-1].width, filters[-1].height) != (0, 0)


def test_missing_tensorboard_is_one_clear_line(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ImportError, match=r'pip install "ebm\[tensorboard\]"'):
        TensorBoard("unused")


def test_cli_train_tensorboard(tmp_path, capsys):
    code = cli.main(
        ["train", "--epochs", "2", "--hidden", "4", "--out", str(tmp_path / "run"), "--tensorboard", str(tmp_path / "tb")]
    )
    assert code in (0, None), capsys.readouterr().err
    tags = read_events(tmp_path / "tb").Tags()
    assert {"metrics/loss", "metrics/val_log_likelihood", "metrics/lr"} <= set(tags["scalars"])
    assert {"samples/v", "filters"} <= set(tags["images"])
