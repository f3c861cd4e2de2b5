"""Data: preprocessing ops (registered by name), label transforms, sources and tf.data pipelines."""
