"""Attack: hand in a model that returns a loss it made up beside its logits (build_models.Liar)."""

import os
import shutil

from prepare import OUT_DIR

shutil.copyfile("model_in.pt2", os.path.join(OUT_DIR, "model.pt2"))  # made_up_loss.pt2
print("---")
print("val_bpb:          0.010000")
