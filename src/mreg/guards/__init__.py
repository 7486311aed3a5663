"""Post-build guards: what must hold of the built images before anything is pushed or registered.

`skew`: both images hold the same versions of every distribution they share, and exactly their lock sets.
`onnx`: the serve image's onnxruntime can open an ONNX model before it is registered.
"""
