"""Writes the fuzz seed corpus (fuzz/corpus/): small valid files from the reference
safetensors package, one per dtype family and shape kind, plus hand-made edge cases."""
import json, os, struct, sys
import numpy as np
from safetensors.numpy import save

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus")
os.makedirs(out, exist_ok=True)

def put(name, data):
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)

put("f32.safetensors", save({"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(3, dtype=np.float32)}))
put("mixed.safetensors", save({"a": np.ones((2, 2), dtype=np.float16), "i": np.arange(4, dtype=np.int64), "u": np.zeros(3, dtype=np.uint8), "z": np.zeros((0, 4), dtype=np.float32)}, metadata={"format": "pt", "k": "v"}))
put("scalar.safetensors", save({"n": np.array(7, dtype=np.int64)}))
put("bool.safetensors", save({"m": np.array([True, False, True])}))

def raw(header, data=b""):
    body = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(body)) + body + data

put("bf16.safetensors", raw({"x": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4))
put("f8.safetensors", raw({"x": {"dtype": "F8_E4M3", "shape": [3], "data_offsets": [0, 3]}, "__metadata__": {"a": "b"}}, b"\1\2\3"))
put("f4.safetensors", raw({"x": {"dtype": "F4", "shape": [4], "data_offsets": [0, 2]}}, b"\0\0"))
put("empty.safetensors", raw({}))
put("overlap.safetensors", raw({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}, "b": {"dtype": "U8", "shape": [2], "data_offsets": [1, 3]}}, b"abc"))
put("gap.safetensors", raw({"a": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}, b"ab"))
put("dupkey.safetensors", b"\x3c\0\0\0\0\0\0\0" + b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{}}' + b"x")
put("bigshape.safetensors", raw({"a": {"dtype": "F64", "shape": [4611686018427387904, 4], "data_offsets": [0, 0]}}))
put("pickle.bin", b"\x80\x02}q\x00.")
put("utf8.safetensors", b"\x06\0\0\0\0\0\0\0{\"\xff\":1}")
