"""
Loads a run's torch.export archive (out/model.pt2) as data: the one loader of the evaluators
of exported programs (tinylm's and nanochat's). Usage, in an evaluator:
from exported import Refused, load_model

Why a worker module written into the evaluator's folder: the evaluator runs in the sandbox,
which holds the task's protected and evaluator files and the Python installation, never
the worker's source tree. So the runner writes this file's bytes, read from the worker's
own installation, as exported.py beside the evaluator (`autoswarm.worker.scoring`), read-only, and a
task cannot bring its own (`autoswarm.shared.task` refuses a task file that Python would import
as `exported`). The loader is versioned with the worker, not with the task; an evaluator
run by hand, outside autoswarm, imports it as autoswarm.worker.exported. It imports nothing of
autoswarm's, only torch and sympy, which the evaluator's environment has.

What it guarantees, for a model that load_model returns:
- torch reads exactly the bytes checked here: the archive is read once into memory,
  duplicate or unexpected names are refused, and what torch.export.load gets is a new
  archive packed here from the checked entries (the JSON documents written back from the
  parsed, checked objects; the node metadata and the sample inputs left out);
- nothing in the archive reaches eval, exec, sympify or unpickling: no symbolic shapes,
  guards or range constraints (torch would hand their expr_str to sympy.sympify, which
  evaluates Python), no pickled payloads or custom objects, only plain names (torch writes
  names into the Python code it generates and runs), and while torch loads, sympy's
  parser and unpickling refuse to run at all;
- the program calls only the operators in ALLOWED_OPERATORS, a list by name of pure aten
  operators: no file, process, network, random-state, uninitialised-memory or in-place
  operator (aten.from_file and aten.save read and write files with pure-looking schemas,
  so a rule on schemas is not enough), with no dropout;
- it takes one tensor and returns one tensor, and keeps no state between calls.
And check_causal, the one check of what a loaded language model computes that every such
evaluator makes: each row's logits may depend only on that row's earlier bytes.
What it does not guarantee: anything else about what the program computes (the evaluator
scores it), or its speed and memory (the runner's limits cover that).
"""

from __future__ import annotations

import io
import json
import operator
import os
import pickle
import re
import zipfile
from collections.abc import Callable
from typing import Any, NoReturn

import sympy.parsing.sympy_parser
import torch
import torch.export.pt2_archive._package  # torch.export.load's loader: ~1.4 s to import
from torch.fx.operator_schemas import normalize_function
from torch.utils._pytree import tree_structure, treespec_dumps

# ---------------------------------------------------------------------------
# What an archive may hold (fixed)
# ---------------------------------------------------------------------------

MAX_ARCHIVE_BYTES = 8 * 2**30  # the archive and each of its entries, uncompressed
ARCHIVE_ROOT = "archive"  # the folder of the re-packed archive
ARCHIVE_FILES = re.compile(  # all that torch.export.save writes for one plain program
    r"^(?P<root>[A-Za-z0-9_.-]+)/(?P<name>"
    r"models/model\.json|data/sample_inputs/model\.pt|"
    r"data/weights/model_weights_config\.json|data/weights/weight_\d+|"
    r"data/constants/model_constants_config\.json|data/constants/tensor_\d+|"
    r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r")$"
)
PLAIN_STRING = re.compile(r"^[A-Za-z0-9_.+-]{0,200}$")  # names, FQNs, dtypes, "2.13.0+cpu"
SHOWN = re.compile(r"^[A-Za-z0-9_./+-]{1,200}$")  # attacker text an error message may repeat
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,199}$")  # a value or argument name
EMPTY_FIELDS = (  # fields of symbolic shapes, guards and custom objects: must be empty
    "sym_int_values", "sym_bool_values", "sym_float_values", "range_constraints",
    "guards_code", "custom_obj_values",
)  # fmt: skip
TARGET = re.compile(r"^torch\.ops\.aten\.(?P<op>[A-Za-z0-9_]+)\.(?P<overload>[A-Za-z0-9_]+)$")
GETITEM = "_operator.getitem"

# The operators a program may call, by name (aten.<name>.<overload>: the out= overloads are
# refused by name, any other that writes an argument by its schema). Pure functions of
# their inputs: nothing that reads or writes files, starts processes, touches the network,
# draws random numbers, returns uninitialised memory (it may hold the held-out text) or
# writes in place. Add to this list only such an operator.
OPERATOR_NAMES = (  # space-separated, a line per family of operators
    # elementwise arithmetic and comparisons
    "add sub rsub mul div neg reciprocal pow sqrt rsqrt exp exp2 expm1 log log2 log10 log1p "
    "abs sign sgn clamp clamp_min clamp_max clip minimum maximum fmod remainder floor ceil "
    "round trunc floor_divide square lerp addcmul addcdiv hypot atan2 where masked_fill "
    "eq ne lt le gt ge logical_and logical_or logical_not logical_xor bitwise_and bitwise_or "
    "bitwise_xor bitwise_not __and__ __or__ __xor__ isnan isinf isfinite "
    "nan_to_num erf erfc sin cos tan asin acos atan sinh cosh tanh sigmoid "
    # activations, normalisation, attention
    "relu relu6 gelu silu mish elu selu celu leaky_relu hardtanh hardsigmoid hardswish "
    "softplus glu log_sigmoid softmax log_softmax _softmax _log_softmax _safe_softmax "
    "layer_norm native_layer_norm rms_norm _fused_rms_norm group_norm native_group_norm "
    "_native_batch_norm_legit_no_training scaled_dot_product_attention dropout "
    # linear algebra and reductions
    "linear matmul mm bmm addmm baddbmm einsum dot outer convolution conv1d conv2d sum mean "
    "amax amin max min argmax argmin prod var var_mean std std_mean norm linalg_vector_norm "
    "logsumexp cumsum cumprod any all topk sort "
    # shapes, views, indexing, creation, dtypes
    "view reshape _unsafe_view permute transpose t expand unsqueeze squeeze flatten unflatten "
    "view_as contiguous clone alias detach lift_fresh_copy slice select narrow index_select "
    "gather index index_put index_add scatter scatter_add slice_scatter select_scatter "
    "take_along_dim cat stack split split_with_sizes chunk unbind repeat "
    "repeat_interleave tile roll flip tril triu constant_pad_nd pad unfold diagonal "
    "embedding one_hot arange zeros zeros_like ones ones_like full full_like scalar_tensor "
    "new_zeros new_ones new_full eye linspace copy fill to _to_copy type_as "
    "_assert_tensor_metadata"
)
ALLOWED_OPERATORS = frozenset(OPERATOR_NAMES.split())
NO_RANDOMNESS = {  # operators allowed only when the argument named says "no dropout"
    "dropout": ("train", False),
    "scaled_dot_product_attention": ("dropout_p", 0.0),
}


def allowed(op: str, overload: str) -> bool:
    """Whether aten.<op>.<overload> is on the list (its out= overloads never are)."""
    return op in ALLOWED_OPERATORS and "out" not in overload.split("_")


class Refused(Exception):
    """The archive is not a plain, pure, static-shaped program: scored as the run's failure."""


# ---------------------------------------------------------------------------
# Check the archive as data
# ---------------------------------------------------------------------------


def read_entries(data: bytes) -> dict[str, bytes]:
    """{name inside the root folder: bytes} of a zip archive held in memory, refused when a
    name comes twice, is unexpected, or the roots differ."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise Refused(f"not a zip archive: {exc}") from None
    names = [info.filename for info in infos]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise Refused(f"the model archive names {shown(twice)} twice")
    if sum(info.file_size for info in infos) > MAX_ARCHIVE_BYTES:
        raise Refused(f"the model archive holds more than {MAX_ARCHIVE_BYTES} bytes")
    entries: dict[str, bytes] = {}
    roots: set[str] = set()
    for info in infos:
        match = ARCHIVE_FILES.match(info.filename)
        if match is None:
            raise Refused(f"unexpected file in the model archive: {shown(info.filename)}")
        roots.add(match["root"])
        try:
            entries[match["name"]] = archive.read(info)
        except (zipfile.BadZipFile, ValueError, OSError, NotImplementedError) as exc:
            raise Refused(f"cannot read {info.filename} in the model archive: {exc}") from None
    if len(roots) != 1:
        raise Refused("the model archive's files lie in more than one folder")
    return entries


def shown(value: object) -> str:
    """`value` for an error message: itself when plain, never the attacker's text."""
    return repr(value) if SHOWN.match(str(value)) else "(not a plain string)"


def check_field(name: str, key: str, value: object) -> None:
    """Refuse a symbolic field, a pickled payload, a filled field of symbolic shapes or
    custom objects, or a key that is not a plain string."""
    if key in ("expr_str", "as_expr") or key.startswith("as_sym"):
        raise Refused(f"{name}: symbolic shapes are not allowed ({key})")
    if key in EMPTY_FIELDS and value:
        raise Refused(f"{name}: {key} must be empty (static shapes, no custom objects)")
    if key == "use_pickle" and value is not False:
        raise Refused(f"{name}: pickled payloads are not allowed")
    if not PLAIN_STRING.match(key):
        raise Refused(f"{name}: a key is not a plain string")


def check_value(name: str, node: object, key: str = "") -> None:
    """Refuse a symbolic field, a pickled payload, an unlisted operator's name, a name that
    is not an identifier, or any other string that is not plain, anywhere in `node`."""
    if isinstance(node, dict):
        for k, v in node.items():
            check_field(name, k, v)
            check_value(name, v, k)
    elif isinstance(node, list):
        for v in node:
            check_value(name, v, key)
    elif key == "target":
        match = TARGET.match(str(node))
        if node != GETITEM and not (match and allowed(match["op"], match["overload"])):
            raise Refused(f"{name}: operator {shown(node)} is not allowed")
    elif key == "name" and not IDENTIFIER.match(str(node)):
        raise Refused(f"{name}: the name {shown(node)} is not a plain identifier")
    elif isinstance(node, str) and not PLAIN_STRING.match(node) and node != "-Infinity":
        raise Refused(f"{name}: a string is not plain (letters, digits and _.+- only)")


def checked_program_doc(doc: Any) -> Any:
    """models/model.json, checked; with its free-text fields (node metadata, whose stack
    traces torch writes into generated code as comments) left out."""
    try:
        graph_module = doc["graph_module"]
        graph = graph_module["graph"]
        signature = graph_module["module_call_graph"][0]["signature"]
        specs = signature["in_spec"], signature["out_spec"]
    except (KeyError, IndexError, TypeError):
        raise Refused("models/model.json is not an exported program") from None
    leaf = torch.zeros(())
    one_in = treespec_dumps(tree_structure(((leaf,), {})))  # forward(x), no keywords
    if specs != (one_in, treespec_dumps(tree_structure(leaf))):
        raise Refused("the program must take one tensor (bytes) and return one tensor (logits)")
    signature["in_spec"] = signature["out_spec"] = ""  # checked above; put back below
    graph_module["metadata"] = {}
    for node in graph.get("nodes", []):
        if isinstance(node, dict):
            node["metadata"] = {}
    check_value("models/model.json", doc)
    signature["in_spec"], signature["out_spec"] = specs
    return doc


def repack(entries: dict[str, bytes]) -> io.BytesIO:
    """A new archive from the checked entries alone: JSON written back from the checked
    objects, weights as read, and no sample inputs (torch reads empty ones as none)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for name, data in entries.items():
            if name.endswith(".json"):
                try:
                    doc = json.loads(data)
                except (ValueError, RecursionError) as exc:
                    raise Refused(f"{name} is not JSON: {exc}") from None
                if name == "models/model.json":
                    doc = checked_program_doc(doc)
                else:
                    check_value(name, doc)
                data = json.dumps(doc).encode()
            elif name == "data/sample_inputs/model.pt":
                data = b""
            archive.writestr(f"{ARCHIVE_ROOT}/{name}", data)
    if "models/model.json" not in entries:
        raise Refused("the model archive holds no program (models/model.json)")
    out.seek(0)
    return out


# ---------------------------------------------------------------------------
# Load it with nothing evaluated, and check the program
# ---------------------------------------------------------------------------


def refuse(*args: object, **kwargs: object) -> NoReturn:
    raise Refused("the archive asked to evaluate or unpickle something")


def load_program(archive: io.BytesIO) -> torch.export.ExportedProgram:
    """torch.export.load of a re-packed archive, with sympy's parser, pickle.loads and any
    torch.load but weights_only=True refusing to run."""
    real = torch.load, pickle.loads, sympy.parsing.sympy_parser.parse_expr

    def weights_only_load(*args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        return real[0](*args, **kwargs)

    parser = sympy.parsing.sympy_parser
    torch.load, pickle.loads, parser.parse_expr = weights_only_load, refuse, refuse
    try:
        return torch.export.load(archive)
    except Refused:
        raise
    except Exception as exc:  # a malformed archive is the run's failure, not ours
        raise Refused(f"cannot load the program: {type(exc).__name__}: {exc}") from None
    finally:
        torch.load, pickle.loads, parser.parse_expr = real


def check_call(node: torch.fx.Node) -> None:
    """A call to an allowed operator (or getitem of its tuple result), with no dropout."""
    target = node.target
    if target is operator.getitem:
        return
    if not isinstance(target, torch._ops.OpOverload) or target.namespace != "aten":
        raise Refused(f"call to {target} is not allowed")
    op, overload = target._schema.name.split("::", 1)[1], target._overloadname
    if not allowed(op, overload) or target._schema.is_mutable:
        raise Refused(f"operator {target} is not allowed (not on the list of pure operators)")
    if op in NO_RANDOMNESS:
        arg, quiet = NO_RANDOMNESS[op]
        normalized = normalize_function(
            target, node.args, node.kwargs, normalize_to_only_use_kwargs=True
        )
        if normalized is None or normalized.kwargs.get(arg, quiet) != quiet:
            raise Refused(f"operator {target} is allowed only with {arg}={quiet}")


def check_program(program: torch.export.ExportedProgram) -> None:
    """Allowed operators only, one tensor in and one out, no state kept between calls."""
    for node in program.graph.nodes:
        if node.op == "call_function":
            check_call(node)
        elif node.op not in ("placeholder", "output", "get_attr"):
            raise Refused(f"graph node kind {node.op!r} is not allowed")
    signature = program.graph_signature
    if signature.buffers_to_mutate or signature.user_inputs_to_mutate:
        raise Refused("the program mutates its state or inputs")
    if len(signature.user_inputs) != 1 or len(signature.user_outputs) != 1:
        raise Refused("the program must take one tensor (bytes) and return one tensor (logits)")


def load_model(path: str | os.PathLike[str]) -> torch.nn.Module:
    """The checked program of the archive at `path` as a module; Refused says why not."""
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size > MAX_ARCHIVE_BYTES:
                raise Refused(f"{path} is larger than {MAX_ARCHIVE_BYTES} bytes")
            data = f.read()
    except OSError as exc:
        raise Refused(f"cannot read {path}: {exc}") from None
    archive = repack(read_entries(data))
    del data
    program = load_program(archive)
    check_program(program)
    try:
        return program.module()
    except Exception as exc:
        raise Refused(f"cannot build the program: {type(exc).__name__}: {exc}") from None


# ---------------------------------------------------------------------------
# What every evaluator of an exported language model checks
# ---------------------------------------------------------------------------


def scramble(x: torch.Tensor, vocab_size: int, generator: torch.Generator) -> torch.Tensor:
    """x with every token replaced by a different, random one."""
    noise = torch.randint(1, vocab_size, x.shape, generator=generator).to(x.device)
    return (x + noise) % vocab_size


def check_causal(
    run: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    logits: torch.Tensor,
    generator: torch.Generator,
    *,
    whole_rows: int,
    tol: float,
) -> None:
    """One pass for causality and row independence: the rows of the batch `x` (whose logits
    are `logits`) move to random places and each one's tokens after a random cut are
    replaced (`whole_rows` rows keep all theirs); a row's logits up to its cut must equal
    those it had in its own place with its own tokens, within `tol`. `run` maps a batch to
    its logits. Refused, saying which, when they moved. The cuts and places come from
    `generator`: seeded from os.urandom, a model cannot know where they fall."""
    rows, length = x.shape
    positions = torch.arange(length, device=x.device)
    order = torch.randperm(rows, generator=generator).to(x.device)  # check row i: window order[i]
    cuts = torch.randint(0, length - 1, (rows, 1), generator=generator).to(x.device)  # 0..T-2
    whole = (torch.randperm(rows, generator=generator) < whole_rows).to(x.device)
    cuts = cuts.masked_fill(whole[:, None], length - 1)  # nothing after T-1: all compared
    later = positions[None, :] > cuts
    moved = x[order]
    changed = torch.where(later, scramble(moved, logits.shape[-1], generator), moved)
    drift = (run(changed) - logits[order]).abs().amax(dim=2).masked_fill(later, 0.0)
    moved_by = drift.max().item()
    if moved_by <= tol:
        return
    # Refused either way; to say why, the same rows again, each back in its own place.
    in_place, in_place_later = torch.empty_like(changed), torch.empty_like(later)
    in_place[order], in_place_later[order] = changed, later
    drift = (run(in_place) - logits).abs().amax(dim=2).masked_fill(in_place_later, 0.0)
    if drift.max().item() > tol:
        row = int(drift.amax(dim=1).argmax())
        cut = int((~in_place_later[row]).sum()) - 1
        raise Refused(
            f"not causal: logits at positions <= {cut} moved by "
            f"{drift[row].max().item():.3g} when later bytes changed"
        )
    raise Refused(
        f"rows are not independent: a row's logits moved by {moved_by:.3g} "
        "when it changed places and the other rows changed"
    )
