from components.events_example_gen.component import EventsExampleGen  # noqa: F401
