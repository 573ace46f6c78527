"""The recommendation strategy layer between the shop and the retrieval model.

A request names a *scene* (``home``, ``cart``, ``detail`` ...). The routing table
(:mod:`service.strategy.routing`) maps each scene to retrieval routes (:mod:`.retrievers`), whose
candidates are filtered (:mod:`.filters`), fused and ranked (:mod:`.ranking`) and re-ranked for
diversity (:mod:`.diversity`) by :class:`service.strategy.service.RecommendationService`.

Nothing here imports TensorFlow: the model is reached through the model server
(:class:`service.strategy.model_gateway.ModelGateway` over ``serving.client.ModelClient``).
"""
