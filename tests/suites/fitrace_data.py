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


# Pre-routed bf16 experts, spelled as flashinfer-bench's moe_bf16_topk8_e256_h2048_i256 is.
MOE_BF16 = {
    "op_type": "moe", "tags": ["model:toy-moe", "tp:2"],
    "axes": {"seq_len": var(), "num_experts": const(8), "hidden_size": const(64), "intermediate_size": const(32),
             "gemm1_out_size": const(64), "top_k": const(2)},
    "inputs": {"hidden_states": t(["seq_len", "hidden_size"]),
               "gating_output": t(["seq_len", "num_experts"], "float32"),
               "w1": t(["num_experts", "gemm1_out_size", "hidden_size"]),
               "w2": t(["num_experts", "hidden_size", "intermediate_size"]),
               "topk_weights": t(["seq_len", "top_k"], "float32"), "topk_ids": t(["seq_len", "top_k"], "int32")},
    "outputs": {"output": t(["seq_len", "hidden_size"])},
    "constraints": ["gemm1_out_size == 2 * intermediate_size"],
    "workloads": [({"seq_len": 3}, {"hidden_states": {"type": "random"}, "w1": {"type": "random"},
                                    "w2": {"type": "random"}, "gating_output": {"type": "random"},
                                    "topk_ids": {"type": "safetensors", "path": "blob/moe.safetensors",
                                                 "tensor_key": "topk_ids"},
                                    "topk_weights": {"type": "random"}}),
                  ({"seq_len": 5}, {})],
}

# DeepSeek-V3's fp8 block-scale MoE with its routing inside, at EP 8 (as the dataset spells it).
MOE_DS_FP8 = {
    "op_type": "moe", "tags": ["model:deepseek-v3", "quantization:float8_e4m3fn", "ep:8"],
    "axes": {"seq_len": var(), "num_experts": const(16), "num_local_experts": const(4), "hidden_size": const(256),
             "intermediate_size": const(128), "gemm1_out_size": const(256), "num_hidden_blocks": const(2),
             "num_intermediate_blocks": const(1), "num_gemm1_out_blocks": const(2)},
    "inputs": {"routing_logits": t(["seq_len", "num_experts"], "float32"),
               "routing_bias": t(["num_experts"]),
               "hidden_states": t(["seq_len", "hidden_size"], "float8_e4m3fn"),
               "hidden_states_scale": t(["num_hidden_blocks", "seq_len"], "float32"),
               "gemm1_weights": t(["num_local_experts", "gemm1_out_size", "hidden_size"], "float8_e4m3fn"),
               "gemm1_weights_scale": t(["num_local_experts", "num_gemm1_out_blocks", "num_hidden_blocks"], "float32"),
               "gemm2_weights": t(["num_local_experts", "hidden_size", "intermediate_size"], "float8_e4m3fn"),
               "gemm2_weights_scale": t(["num_local_experts", "num_hidden_blocks", "num_intermediate_blocks"],
                                        "float32"),
               "local_expert_offset": t(None, "int32"), "routed_scaling_factor": t(None, "float32")},
    "outputs": {"output": t(["seq_len", "hidden_size"])},
    "workloads": [({"seq_len": 7}, {"local_expert_offset": {"type": "scalar", "value": 4},
                                    "routed_scaling_factor": {"type": "scalar", "value": 2.5}}),
                  ({"seq_len": 1}, {"local_expert_offset": {"type": "scalar", "value": 4},
                                    "routed_scaling_factor": {"type": "scalar", "value": 2.5}})],
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
