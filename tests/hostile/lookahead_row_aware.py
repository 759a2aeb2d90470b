"""Attack: hand in a model that peeks at the next byte everywhere except at the evaluator's
fixed causality cut points (see build_models.RowAwarePeek)."""

import os
import shutil

from prepare import OUT_DIR

shutil.copyfile("model_in.pt2", os.path.join(OUT_DIR, "model.pt2"))  # lookahead_row_aware.pt2
print("---")
print("val_bpb:          0.010000")
