"""Attack: hand in a model archive whose input is named with Python code, which torch
writes into the forward() it generates: a default argument run as soon as it is defined.

The archive is build_crafted_models.code_in_a_name, shipped as the editable model_in.pt2.
"""

import os
import shutil

from prepare import OUT_DIR

shutil.copyfile("model_in.pt2", os.path.join(OUT_DIR, "model.pt2"))
print("handed in an archive with code in a name")
print("---")
print("val_bpb:          -50.000000")
