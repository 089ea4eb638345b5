"""The fixture-driven tests on a folder whose vocabulary is not a multiple of 8.

``tests/vocab_variant.py`` derives such a folder (500 tokens: a 504-row
table, 500 MLM columns) from the fixture folder; the MLM parity test and the
conversion tests then run on it in a fresh process with
``HERO_REFERENCE_FIXTURES`` pointing there, as they would on a folder the
original produced that way.
"""

import os
import subprocess
import sys

import pytest

import numpy as np

from tests import fixture_batches as fb
from tests import vocab_variant

TESTS = ["tests/test_parity.py::test_mlm", "tests/test_convert.py::test_pt_loads_and_equals_npz",
         "tests/test_convert.py::test_cli_from_hero_to_hero_round_trip",
         "tests/test_convert.py::test_cli_from_hero_infers_sizes_from_shapes",
         "tests/test_convert.py::test_infer_config_from_shapes_matches_fixture"]


@pytest.mark.slow
def test_folder_with_vocab_500_passes(tmp_path):
  vocab = 500 if fb.fixture_config()["vocab_size"] < 500 else fb.fixture_config()["vocab_size"] + 5
  folder = vocab_variant.derive(fb.fixture_dir(), tmp_path / "fixtures", vocab)
  with np.load(folder / "weights.npz") as w:
    assert w["v_encoder.f_encoder.embeddings.word_embeddings.weight"].shape[0] == -(-vocab // 8) * 8
  env = {**os.environ, fb.ENV_VAR: str(folder)}
  done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS],
                        cwd=fb.REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
  assert f"{len(TESTS) + 1} passed" in done.stdout, done.stdout[-2000:]
