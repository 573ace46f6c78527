"""Custom TFX components, one folder each, written only where a standard component cannot do the job."""
