"""Runtimes that run an exported artifact: one folder per runtime (see DESIGN.md).

``litert/`` and ``tflite_micro/`` are self-contained building blocks for the
runtime seam (issue 7); nothing here imports TensorFlow at module level.
"""
