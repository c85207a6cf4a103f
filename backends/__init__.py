"""Execution backends, installed as ``onnxviz.backends``.

- :mod:`onnxviz.backends.onnxruntime`: forward passes with taps on any tensor.
- :mod:`onnxviz.backends.numpy`: the reference interpreter and reverse-mode autodiff over ONNX ops.
- :mod:`onnxviz.backends.torch`: optional PyTorch adapter, a second opinion on gradients.
"""
