"""The TFX pipeline: ``create_pipeline`` and the runners that bind it to an orchestrator."""
