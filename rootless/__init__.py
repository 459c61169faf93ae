"""The per-user rootless world around the engine: namespace, connector, ports, sandboxes, CLI."""
