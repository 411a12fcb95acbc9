# Paper 5 — DAT (Mao et al., NeurIPS 2022): VQ autoencoder, DAT training, corruption benchmark.
