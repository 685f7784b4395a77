#!/usr/bin/env python3
"""export-model.py - writes a PyTorch nn.Sequential MLP as an oag model folder.

The folder holds config.json and model.safetensors in the format of src/model/model.h. The
safetensors file is written here with struct + json, so only torch is needed (no numpy, no
safetensors package).

Supported modules: Linear, ReLU, GELU (exact, approximate='none'), SiLU, Tanh, LayerNorm over
the last dimension, Softmax over the last dimension (last module only). Identity and Dropout are
skipped (inference). Nested Sequentials are flattened. Anything else raises.

    python3 tools/export-model.py --demo OUT_DIR [--dtype float16]
        a small demo model, plus sample_input.f32 / sample_output.f32 (16 rows, torch's output
        in float64 from the dtype-rounded weights) to check the C engine with
        build/tests/model/test_model_cpu --check OUT_DIR
    python3 tools/export-model.py --from model.pt OUT_DIR [--dtype bfloat16]
        a whole nn.Sequential saved with torch.save(seq, "model.pt")

From Python (the file name has a dash, so load it by path):
    import importlib.util
    spec = importlib.util.spec_from_file_location("export_model", "tools/export-model.py")
    em = importlib.util.module_from_spec(spec); spec.loader.exec_module(em)
    em.export(seq, "out_dir", dtype="float16")
"""
import argparse
import ctypes
import json
import os
import struct
import sys

# config dtype -> (safetensors dtype, torch dtype name)
DTYPES = {"float32": ("F32", "float32"), "float16": ("F16", "float16"),
          "bfloat16": ("BF16", "bfloat16")}


def write_safetensors(path, tensors, metadata=None):
    """Writes tensors, a list of (name, st_dtype, shape, raw little-endian bytes), in order.

    The header is padded with spaces to a multiple of 8 bytes, as the safetensors library does.
    Written to path + ".tmp" and renamed, so a reader never sees half a file."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    off = 0
    for name, st_dtype, shape, raw in tensors:
        if name in header:
            raise ValueError(f"tensor {name!r} twice")
        header[name] = {"dtype": st_dtype, "shape": [int(d) for d in shape],
                        "data_offsets": [off, off + len(raw)]}
        off += len(raw)
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * (-len(hb) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for _, _, _, raw in tensors:
            f.write(raw)
    os.replace(tmp, path)


def write_model(out_dir, config, tensors):
    """Writes model.safetensors (tensors as for write_safetensors), then config.json."""
    os.makedirs(out_dir, exist_ok=True)
    write_safetensors(os.path.join(out_dir, "model.safetensors"), tensors,
                      {"format": "pt", "generator": "oag export-model.py"})
    tmp = os.path.join(out_dir, "config.json.tmp")
    with open(tmp, "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    os.replace(tmp, os.path.join(out_dir, "config.json"))


def tensor_bytes(t, torch_dtype):
    """The raw bytes of tensor t converted to torch_dtype (contiguous, on the CPU)."""
    if sys.byteorder != "little":
        raise RuntimeError("safetensors data is little-endian; this host is not")
    t = t.detach().to(device="cpu", dtype=torch_dtype).contiguous()
    return ctypes.string_at(t.data_ptr(), t.numel() * t.element_size())


def _flatten(mods):
    import torch.nn as nn
    for m in mods:
        if isinstance(m, nn.Sequential):
            yield from _flatten(m)
        else:
            yield m


def export(seq, out_dir, dtype="float32", name=None, input_dim=None):
    """Writes seq (an nn.Sequential, or any iterable of modules) to out_dir in dtype.

    input_dim is needed only when no Linear or LayerNorm fixes it. Returns the config dict.
    Raises TypeError for an unsupported module, ValueError for inconsistent widths or options."""
    import torch
    import torch.nn as nn

    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    st_dtype, tname = DTYPES[dtype]
    tdtype = getattr(torch, tname)
    mods = [m for m in _flatten(seq) if not isinstance(m, (nn.Identity, nn.Dropout))]
    layers, tensors = [], []
    width = input_dim
    first = input_dim

    def add(tname_, t):
        tensors.append((tname_, st_dtype, tuple(t.shape), tensor_bytes(t, tdtype)))
        return tname_

    def need_width(i, w):
        nonlocal width, first
        if width is None:
            width = first = w
        if w != width:
            raise ValueError(f"module {i} ({type(mods[i]).__name__}) takes width {w}, "
                             f"but the previous layers give {width}")

    for i, m in enumerate(mods):
        if isinstance(m, nn.Linear):
            need_width(i, m.in_features)
            layer = {"type": "linear", "weight": add(f"{i}.weight", m.weight)}
            if m.bias is not None:
                layer["bias"] = add(f"{i}.bias", m.bias)
            width = m.out_features
        elif isinstance(m, nn.GELU):
            if getattr(m, "approximate", "none") != "none":
                raise ValueError(f"module {i}: GELU(approximate={m.approximate!r}) is not in "
                                 "the format; use the exact nn.GELU()")
            layer = {"type": "gelu"}
        elif isinstance(m, (nn.ReLU, nn.SiLU, nn.Tanh)):
            layer = {"type": {nn.ReLU: "relu", nn.SiLU: "silu", nn.Tanh: "tanh"}[type(m)]}
        elif isinstance(m, nn.LayerNorm):
            shape = tuple(m.normalized_shape)
            if len(shape) != 1:
                raise ValueError(f"module {i}: LayerNorm over {shape}: only the last dimension")
            need_width(i, shape[0])
            w = m.weight if m.weight is not None else torch.ones(shape[0])
            layer = {"type": "layernorm", "weight": add(f"{i}.weight", w)}
            if m.bias is not None:
                layer["bias"] = add(f"{i}.bias", m.bias)
            layer["eps"] = float(m.eps)
        elif isinstance(m, nn.Softmax):
            if m.dim not in (-1, 1, None):
                raise ValueError(f"module {i}: Softmax(dim={m.dim}): only the last dimension")
            if i != len(mods) - 1:
                raise ValueError(f"module {i}: Softmax must be the last module")
            layer = {"type": "softmax"}
        else:
            raise TypeError(f"module {i}: {type(m).__name__} is not supported (Linear, ReLU, "
                            "GELU, SiLU, Tanh, LayerNorm, Softmax)")
        layers.append(layer)
    if not layers:
        raise ValueError("no layers to export")
    if width is None:
        raise ValueError("input_dim is needed: no Linear or LayerNorm fixes the width")
    if name is None:
        name = os.path.basename(os.path.normpath(out_dir)) or "model"
    config = {"format": "oag-mlp", "version": 1, "name": name[:63], "dtype": dtype,
              "input_dim": first, "output_dim": width, "layers": layers}
    write_model(out_dir, config, tensors)
    return config


def demo(out_dir, dtype="float32", seed=0, rows=16):
    """Exports a small demo MLP and a sample batch with torch's reference output."""
    import copy
    import torch
    import torch.nn as nn

    torch.manual_seed(seed)
    seq = nn.Sequential(
        nn.Linear(64, 128), nn.GELU(), nn.LayerNorm(128),
        nn.Linear(128, 128), nn.SiLU(),
        nn.Linear(128, 96), nn.Tanh(),
        nn.Linear(96, 128), nn.ReLU(),
        nn.Linear(128, 10), nn.Softmax(dim=-1))
    with torch.no_grad():                       # a layernorm that is not the identity
        seq[2].weight.uniform_(0.5, 1.5)
        seq[2].bias.uniform_(-0.5, 0.5)
    seq.eval()
    config = export(seq, out_dir, dtype=dtype, name="demo")

    # The reference: the weights as stored (rounded to dtype), computed in float64.
    ref = copy.deepcopy(seq)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(p.to(getattr(torch, DTYPES[dtype][1])).float())
        x = torch.randn(rows, 64) * 2
        y = ref.double()(x.double()).float()
    with open(os.path.join(out_dir, "sample_input.f32"), "wb") as f:
        f.write(tensor_bytes(x, torch.float32))
    with open(os.path.join(out_dir, "sample_output.f32"), "wb") as f:
        f.write(tensor_bytes(y, torch.float32))
    return config


def main(argv=None):
    ap = argparse.ArgumentParser(description="Export a torch nn.Sequential MLP as an oag model "
                                 "folder (config.json + model.safetensors).")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--demo", action="store_true", help="export a small demo model")
    src.add_argument("--from", dest="src", metavar="FILE.pt",
                     help="an nn.Sequential saved whole with torch.save()")
    ap.add_argument("out_dir", help="the model folder to write")
    ap.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    ap.add_argument("--name", help="the config's name (default: the folder's name)")
    ap.add_argument("--seed", type=int, default=0, help="--demo: random seed")
    a = ap.parse_args(argv)
    try:
        import torch
    except ImportError:
        sys.exit("export-model.py: needs PyTorch (pip install torch)")
    if a.demo:
        cfg = demo(a.out_dir, a.dtype, a.seed)
    else:
        seq = torch.load(a.src, map_location="cpu", weights_only=False)
        cfg = export(seq, a.out_dir, dtype=a.dtype, name=a.name)
    print(f"export-model.py: wrote {a.out_dir}: {len(cfg['layers'])} layers, "
          f"{cfg['input_dim']} -> {cfg['output_dim']}, {cfg['dtype']}")
    if a.demo:
        print(f"check it: build/tests/model/test_model_cpu --check {a.out_dir}")


if __name__ == "__main__":
    main()
