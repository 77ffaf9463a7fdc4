"""Fast WaveNet generation: per-layer queues of past inputs, so each sample costs O(layers). `reference` is the
PyTorch generator (the exact definition, and the stream bookkeeping both share); `compiled` runs its chunk loop in
the C++ engine built from `csrc/`, and `make_generator()` picks it where it is built."""
