"""Subprocess that runs a ``.tflite`` in TensorFlow Lite Micro's Python interpreter.

Run by ``workbench.runtimes.tflite_micro.runner``; never imported by the parent. TFLM
runs in its own process because (1) it reports its arena use and its errors only on
the C stderr, which the parent captures here as the worker's stderr, and (2) after a
failed allocation a later interpreter in the same process has been seen to crash it
(segmentation fault), which must not take a notebook kernel down.

Usage: ``python -m workbench.runtimes.tflite_micro._worker '{"path": ..., "arena_size":
N, "inputs": "in.npy" or null, "outputs": "out.npy" or null, "print_allocations":
bool}'``. Without inputs it runs one inference on zeros. Prints one JSON line on
stdout: ``{"ok": true}`` or ``{"ok": false, "error": ...}``; C messages go to stderr.
"""

from __future__ import annotations

import json
import sys


def run(args: dict) -> dict:
    import numpy as np
    from tflite_micro.python.tflite_micro import runtime

    with open(args["path"], "rb") as f:
        data = f.read()
    try:
        interpreter = runtime.Interpreter.from_bytes(data, arena_size=int(args["arena_size"]))
    except (RuntimeError, ValueError) as e:
        return {"ok": False, "stage": "allocate", "error": str(e)}
    detail = interpreter.get_input_details(0)
    if args.get("inputs"):
        rows = np.load(args["inputs"])
    else:
        rows = np.zeros((1, *[int(d) for d in detail["shape"]][1:]), dtype=detail["dtype"])
    outputs = []
    try:
        for i in range(len(rows)):
            interpreter.set_input(rows[i : i + 1].astype(detail["dtype"], copy=False), 0)
            interpreter.invoke()
            outputs.append(np.array(interpreter.get_output(0))[0])
    except (RuntimeError, ValueError) as e:
        return {"ok": False, "stage": "invoke", "error": str(e)}
    if args.get("print_allocations"):
        sys.stdout.flush()
        interpreter.print_allocations()
        sys.stderr.flush()
    if args.get("outputs"):
        np.save(args["outputs"], np.stack(outputs))
    return {"ok": True}


def main(argv: list[str]) -> int:
    out = run(json.loads(argv[1]))
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
