"""Self-supervised pretraining (`cnnkit ssl train|val`): SimCLR, BYOL, VICReg, masked image modelling, autoencoder."""
