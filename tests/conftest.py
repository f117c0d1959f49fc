import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def isolated_user_data(tmp_path, monkeypatch):
    """Saved sets and runs go to a temporary folder; the model/corpus cache is shared."""
    monkeypatch.setenv("CALIB_LAB_DATA", str(tmp_path / "user-data"))
