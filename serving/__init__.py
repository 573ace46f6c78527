"""The model server: a TF Serving stand-in (REST and gRPC) and its client. Imports nothing of shoprec or service."""
