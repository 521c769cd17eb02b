"""The student outside vl2v: one ONNX graph, a folder plain timm loads, a model card, and the checks of each.

`run_folder` reads a trained run, `predictor` folds each method's heads into one network, `onnx_export` and
`timm_export` write the two formats, `card` describes the model.
"""
