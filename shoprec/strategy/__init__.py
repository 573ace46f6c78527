"""The recommendation strategy layer between the shop and the retrieval model.

A request names a *scene* (``home``, ``cart``, ``detail`` ...). The routing table
(:mod:`shoprec.strategy.routing`) maps each scene to retrieval routes (:mod:`.retrievers`), whose
candidates are filtered (:mod:`.filters`), fused and ranked (:mod:`.ranking`) and re-ranked for
diversity (:mod:`.diversity`) by :class:`shoprec.strategy.service.RecommendationService`.

Nothing here imports TensorFlow: the model is reached through the model server
(:class:`shoprec.strategy.model_gateway.ModelGateway` over ``serving.client.ModelClient``).
"""
