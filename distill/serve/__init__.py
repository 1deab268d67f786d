"""Audio-only use of a trained run: the ``Model`` API (embed, predict, score), speaker verification
of pairs and trial lists, embeddings of many files, and export to TorchScript / ONNX."""
