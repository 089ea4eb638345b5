"""``import tfds_builders`` registers the three builders with TFDS's own lookup."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# A fresh interpreter: the other tests import the builder modules themselves.
SCRIPT = """
import sys
import tensorflow_datasets as tfds
import tfds_builders
from hero_jax.data import build, synthetic
data_dir = sys.argv[1]
spec = synthetic.SyntheticSpec(train_videos=6, val_videos=2, feature_dim=8)
build.build("hero_synthetic/videos", data_dir, spec=spec)
builder = tfds.builder("hero_synthetic/videos", data_dir=data_dir)
assert builder.info.splits["train"].num_examples == 6, builder.info.splits
source = tfds.data_source("hero_synthetic/videos", split="val", data_dir=data_dir)
assert len(source) == 2 and len(source[0]) > 0
for name in ("hero_tv/tvr", "hero_tv/tvqa", "hero_howto100m/how2r", "hero_howto100m/how2qa"):
  assert tfds.builder(name, data_dir=data_dir).name == name.split("/")[0]
print("ok")
"""


def test_import_registers_every_builder(tmp_path):
  done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=REPO, text=True,
                        capture_output=True, timeout=300)
  assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
