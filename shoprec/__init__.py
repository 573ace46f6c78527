"""The library: feature declarations, configuration, data, model code. Imports no server, service or TFX module file."""
