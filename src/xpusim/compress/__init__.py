"""Model compression: quantizers (uniform, float formats, power-of-two, codebook, binary/ternary), quantization-aware
training with the straight-through estimator, and the built-in tasks they are measured on (``xpusim compress``)."""
