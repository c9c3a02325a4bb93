"""Evaluation on a dataset's held-out records: the chat loss every model is compared by, the format matrix and
greedy samples (`evaluate`), and the run's comparison (`report`)."""
