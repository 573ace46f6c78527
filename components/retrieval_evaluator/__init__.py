from components.retrieval_evaluator.component import RetrievalEvaluator  # noqa: F401
