"""Attack: hand in a model that peeks at the next byte of its input (see build_models.Peek)."""

import os
import shutil

from prepare import OUT_DIR

shutil.copyfile("model_in.pt2", os.path.join(OUT_DIR, "model.pt2"))  # lookahead.pt2
print("---")
print("val_bpb:          0.010000")
