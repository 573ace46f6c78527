"""The recommendation product: the HTTP service, its strategy layer, feature store and event log.

It reads the exported models through :mod:`serving.client` and the library (:mod:`shoprec`); it
never imports trainer code or the pipeline.
"""
