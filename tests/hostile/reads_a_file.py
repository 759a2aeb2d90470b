"""Attack: hand in a model that reads the held-out text while it is scored, through
aten.from_file (a pure-looking schema: no argument is written to).

The archive is build_crafted_models.reads_a_file, shipped as the editable model_in.pt2.
"""

import os
import shutil

from prepare import OUT_DIR

shutil.copyfile("model_in.pt2", os.path.join(OUT_DIR, "model.pt2"))
print("handed in a model calling aten.from_file on heldout/val.bin")
