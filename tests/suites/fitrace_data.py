"""Small FlashInfer-Trace datasets written by the tests, in the format of flashinfer-bench's models."""
import json
from pathlib import Path

REF = "import torch\n\ndef run(*args):\n    return None\n"


def var(): return {"type": "var"}
def const(v): return {"type": "const", "value": v}
def t(shape, dtype="bfloat16"): return {"shape": shape, "dtype": dtype}


DEFS = {
    "gemm_n64_k32": {
        "op_type": "gemm", "tags": ["model:toy-llm", "stage:decode"],
        "axes": {"M": var(), "N": const(64), "K": const(32)},
        "inputs": {"A": t(["M", "K"], "float32"), "B": t(["N", "K"], "float32")},
        "outputs": {"C": t(["M", "N"], "float32")},
        "constraints": ["M >= 1", "K % 16 == 0", "A.shape[0] == M"],
        "workloads": [({"M": 4}, {"A": {"type": "random"}, "B": {"type": "random"}}),
                      ({"M": 8}, {"A": {"type": "random"}, "B": {"type": "random"}})],
    },
    "rmsnorm_h64": {
        "op_type": "rmsnorm", "tags": ["model:toy-llm"],
        "axes": {"batch_size": var(), "hidden_size": const(64)},
        "inputs": {"hidden_states": t(["batch_size", "hidden_size"], "float32"),
                   "weight": t(["hidden_size"], "float32"), "eps": t(None, "float32")},
        "outputs": {"output": t(["batch_size", "hidden_size"], "float32")},
        "workloads": [({"batch_size": 3}, {"hidden_states": {"type": "random"}, "weight": {"type": "random"},
                                           "eps": {"type": "scalar", "value": 1e-6}})],
    },
    "fused_add_rmsnorm_h64": {
        "op_type": "rmsnorm", "tags": ["model:toy-llm"],
        "axes": {"batch_size": var(), "hidden_size": const(64)},
        "inputs": {"hidden_states": t(["batch_size", "hidden_size"], "float32"),
                   "residual": t(["batch_size", "hidden_size"], "float32"),
                   "weight": t(["hidden_size"], "float32")},
        "outputs": {"output": t(["batch_size", "hidden_size"], "float32")},
        "workloads": [({"batch_size": 2}, {"hidden_states": {"type": "random"}, "residual": {"type": "random"},
                                           "weight": {"type": "random"}})],
    },
    "gqa_paged_decode_h4_kv2_d16_ps4": {
        "op_type": "gqa_paged", "tags": ["model:toy-llm", "stage:decode"],
        "axes": {"batch_size": var(), "num_qo_heads": const(4), "num_kv_heads": const(2), "head_dim": const(16),
                 "num_pages": var(), "page_size": const(4), "len_indptr": var(), "num_kv_indices": var()},
        "inputs": {"q": t(["batch_size", "num_qo_heads", "head_dim"], "float32"),
                   "k_cache": t(["num_pages", "page_size", "num_kv_heads", "head_dim"], "float32"),
                   "v_cache": t(["num_pages", "page_size", "num_kv_heads", "head_dim"], "float32"),
                   "kv_indptr": t(["len_indptr"], "int32"), "kv_indices": t(["num_kv_indices"], "int32"),
                   "sm_scale": t(None, "float32")},
        "outputs": {"output": t(["batch_size", "num_qo_heads", "head_dim"], "float32")},
        "constraints": ["len_indptr == batch_size + 1", "num_kv_indices <= num_pages"],
        "workloads": [({"batch_size": 2, "num_pages": 8, "len_indptr": 3, "num_kv_indices": 6},
                       {"q": {"type": "random"}, "k_cache": {"type": "random"}, "v_cache": {"type": "random"},
                        "kv_indptr": {"type": "safetensors", "path": "blob/decode.safetensors",
                                      "tensor_key": "kv_indptr"},
                        "kv_indices": {"type": "safetensors", "path": "blob/decode.safetensors",
                                       "tensor_key": "kv_indices"},
                        "sm_scale": {"type": "scalar", "value": 0.25}})],
    },
    "rope_h4_kv2_d16": {
        "op_type": "rope", "tags": ["model:toy-llm"],
        "axes": {"num_tokens": var(), "num_qo_heads": const(4), "num_kv_heads": const(2), "head_dim": const(16)},
        "inputs": {"q": t(["num_tokens", "num_qo_heads", "head_dim"], "float32"),
                   "k": t(["num_tokens", "num_kv_heads", "head_dim"], "float32"),
                   "positions": t(["num_tokens"], "int64")},
        "outputs": {"q_out": t(["num_tokens", "num_qo_heads", "head_dim"], "float32")},
        "workloads": [({"num_tokens": 5}, {"q": {"type": "random"}, "k": {"type": "random"},
                                           "positions": {"type": "random"}})],
    },
    "moe_fp8_e8_h64": {
        "op_type": "moe", "tags": ["model:toy-moe"],
        "axes": {"seq_len": var(), "hidden_size": const(64)},
        "inputs": {"hidden_states": t(["seq_len", "hidden_size"], "float32")},
        "outputs": {"output": t(["seq_len", "hidden_size"], "float32")},
        "workloads": [({"seq_len": 3}, {"hidden_states": {"type": "random"}}),
                      ({"seq_len": 4}, {"hidden_states": {"type": "random"}})],
    },
}


def write_definition(root: Path, name: str, spec: dict, reference: str = REF) -> Path:
    d = {"name": name, "op_type": spec["op_type"], "axes": spec["axes"], "inputs": spec["inputs"],
         "outputs": spec["outputs"], "reference": reference, "tags": spec.get("tags", []),
         "description": "written by kernelmark's tests", "constraints": spec.get("constraints", [])}
    p = root / "definitions" / spec["op_type"] / f"{name}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(d, indent=2))
    w = root / "workloads" / spec["op_type"] / f"{name}.jsonl"
    w.parent.mkdir(parents=True, exist_ok=True)
    w.write_text("".join(json.dumps({"definition": name, "workload": {"uuid": f"{name}-{i}", "axes": axes,
                                                                        "inputs": inputs},
                                     "solution": None, "evaluation": None}) + "\n"
                         for i, (axes, inputs) in enumerate(spec["workloads"])))
    return p


def write_dataset(root: Path, names=None) -> Path:
    for name, spec in DEFS.items():
        if names is None or name in names:
            write_definition(root, name, spec)
    return root
