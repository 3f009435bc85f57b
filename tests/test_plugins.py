"""A new model family is one file, a new metric one module: written here into models/ and metrics/, with
nothing else edited, both train, measure and land in the table (then removed again)."""

import textwrap

import pandas as pd
import pytest

from tests.conftest import REPOSITORY, run_cli, tiny_words

pytestmark = pytest.mark.slow  # end to end: real runs trained and measured (make test-fast leaves them out)

FAMILY = '''
    """A throw-away family (tests/test_plugins.py writes and removes this file)."""

    from torch import nn

    from models.base import LayerwiseModel
    from models.registry import register


    @register("throwaway")
    class Throwaway(LayerwiseModel):
        layer_type = "fully_connected"

        def __init__(self, *, depth, width, batch_norm, input_shape, num_classes):
            channels, height, side = input_shape
            blocks = [nn.Sequential(nn.Flatten(), nn.Linear(channels * height * side, width), nn.ReLU())]
            blocks += [nn.Sequential(nn.Linear(width, width), nn.ReLU()) for _ in range(depth - 1)]
            super().__init__(stem=None, blocks=blocks, head=nn.Linear(width, num_classes))
'''
METRIC = '''
    """A throw-away metric (tests/test_plugins.py writes and removes this file)."""

    from metrics.registry import LayerResults, register


    @register("throwaway_ncc_error", version=1, paper="tests/test_plugins.py", needs=("ncc",))
    def throwaway_ncc_error(layer: LayerResults) -> dict[str, float]:
        return {split: 1 - correct / layer.count[split] for split, correct in layer.ncc_correct.items()}
'''


def test_a_family_in_one_file_and_a_metric_in_one_module_just_work(tmp_path):
    family, metric = REPOSITORY / "models" / "throwaway_family.py", REPOSITORY / "metrics" / "throwaway_metric.py"
    try:
        family.write_text(textwrap.dedent(FAMILY))
        metric.write_text(textwrap.dedent(METRIC))
        trained = run_cli("train.py", tiny_words(tmp_path, "arch=throwaway", "epochs=1"))
        assert trained.returncode == 0, trained.stderr
        measured = run_cli("analysis.py", [f"out_dir={tmp_path}", "metrics=ncc_accuracy,throwaway_ncc_error",
                                           "figures=false", "threads=1"])
        assert measured.returncode == 0, measured.stderr
    finally:
        family.unlink(missing_ok=True)
        metric.unlink(missing_ok=True)
    table = pd.read_parquet(tmp_path / "default" / "metrics.parquet")
    assert set(table["arch"]) == {"throwaway"} and set(table["metric"]) == {"ncc_accuracy", "throwaway_ncc_error"}
    accuracy = table[table["metric"] == "ncc_accuracy"].set_index(["iteration", "layer", "split"])["value"]
    error = table[table["metric"] == "throwaway_ncc_error"].set_index(["iteration", "layer", "split"])["value"]
    assert (error + accuracy.loc[error.index] - 1).abs().max() < 1e-12
