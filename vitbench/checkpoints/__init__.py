"""Known checkpoints, the official .npz layout, downloads and `load_model`."""
