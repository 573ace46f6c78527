from components.ranking_example_gen.component import RankingExampleGen  # noqa: F401
