"""A whole connector pipeline on one machine, for tests, the fault matrix and benchmarks.

``pipeline`` runs worker processes against fresh topics and a provider emulator;
``accounting`` says what a run lost or duplicated (pure); ``proxy`` cuts a worker off its
broker; ``report`` renders the fault table (pure). Nothing here is used by the connector.
"""
