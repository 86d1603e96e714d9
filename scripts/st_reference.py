#!/usr/bin/env python3
"""Drives the reference `safetensors` package for Graft's conformance tests.

  st_reference.py write SPEC.json OUT   write tensors described in SPEC.json with the reference writer
  st_reference.py read FILE             print name, dtype, shape and sha256 of each tensor, and the metadata
  st_reference.py check FILE...         print "ok" or "error: ..." per file: the reference's accept/refuse decision

SPEC.json: {"metadata": {...} or null, "tensors": [{"name", "dtype" (e.g. "BF16"), "shape", "hex"}]}
Nothing here ever unpickles anything.
"""
import ctypes
import hashlib
import json
import sys

import safetensors

TORCH_NAMES = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8", "F8_E5M2": "float8_e5m2", "F8_E4M3": "float8_e4m3fn",
    "F8_E8M0": "float8_e8m0fnu", "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "I16": "int16", "U16": "uint16", "F16": "float16", "BF16": "bfloat16", "I32": "int32", "U32": "uint32",
    "F32": "float32", "C64": "complex64", "F64": "float64", "I64": "int64", "U64": "uint64", "F4": "float4_e2m1fn_x2",
}


def write(spec_path, out_path):
    with open(spec_path) as f:
        spec = json.load(f)
    buffers, tensors = [], {}
    for t in spec["tensors"]:
        data = bytes.fromhex(t["hex"])
        buf = ctypes.create_string_buffer(data, max(len(data), 1))
        buffers.append(buf)
        shape = list(t["shape"])
        if t["dtype"] == "F4":  # the reference takes the packed storage shape for F4
            shape[-1] //= 2
        tensors[t["name"]] = safetensors.TensorSpec(
            dtype=TORCH_NAMES[t["dtype"]], shape=shape, data_ptr=ctypes.addressof(buf), data_len=len(data))
    with open(out_path, "wb") as f:
        f.write(safetensors.serialize(tensors, metadata=spec.get("metadata")))


def read(path):
    with open(path, "rb") as f:
        content = f.read()
    tensors = [
        {"name": name, "dtype": info["dtype"], "shape": list(info["shape"]), "sha256": hashlib.sha256(info["data"]).hexdigest()}
        for name, info in safetensors.deserialize(content)
    ]
    with safetensors.safe_open(path, framework="numpy") as f:
        metadata = f.metadata()
    print(json.dumps({"tensors": sorted(tensors, key=lambda t: t["name"]), "metadata": metadata}))


def check(paths):
    for path in paths:
        with open(path, "rb") as f:
            content = f.read()
        try:
            safetensors.deserialize(content)
            print("ok")
        except Exception as error:  # the reference raises SafetensorError, or others on odd input
            print("error: " + str(error).replace("\n", " "))


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "write":
        write(sys.argv[2], sys.argv[3])
    elif command == "read":
        read(sys.argv[2])
    elif command == "check":
        check(sys.argv[2:])
    else:
        sys.exit("usage: st_reference.py write|read|check ...")
