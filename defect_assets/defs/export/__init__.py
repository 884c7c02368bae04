"""The champion exported for the line (ONNX, OpenVINO) and its blocking parity check."""
