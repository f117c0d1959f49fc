"""Every page renders (streamlit AppTest), and the prune page runs a job on a tiny model."""

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from calib_core.jobs import manager
from tests.tiny import save_tiny_folder

APP = str(Path(__file__).resolve().parent.parent / "app.py")
PAGES = ["pages/home.py", "pages/model.py", "pages/calibration.py", "pages/similarity.py", "pages/prune.py",
         "pages/results.py"]


@pytest.mark.parametrize("page", PAGES)
def test_page_renders(page):
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    app.switch_page(page).run()
    assert not app.exception, app.exception


def test_prune_flow_on_tiny_model(tmp_path):
    folder = save_tiny_folder(tmp_path / "tiny")
    app = AppTest.from_file(APP, default_timeout=60)
    app.session_state["model_spec"] = str(folder)
    app.run()
    app.switch_page("pages/prune.py").run()
    app.text_input[0].set_value("builtin:wiki")
    app.number_input[0].set_value(2)
    app.number_input[1].set_value(16)
    app.button[0].click().run()  # the form's submit button
    job = manager().get(app.session_state["prune_job"])
    deadline = time.time() + 60
    while not job.done and time.time() < deadline:
        time.sleep(0.2)
    assert job.status == "finished", job.error
    app.switch_page("pages/results.py").run()
    assert not app.exception
    assert app.dataframe[0].value["status"].tolist() == ["finished"]
